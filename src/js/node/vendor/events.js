import {
  require_events
} from "./chunk-W3ZOHF4T.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/events.js
var import_events = __toESM(require_events());
var { once, EventEmitter, defaultMaxListeners, init, listenerCount } = import_events.default;
var events_default = import_events.default;
export {
  EventEmitter,
  events_default as default,
  defaultMaxListeners,
  init,
  listenerCount,
  once
};
