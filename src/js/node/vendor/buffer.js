import {
  require_buffer
} from "./chunk-WJRBNEN5.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/buffer.js
var import_buffer = __toESM(require_buffer());
var buffer_default = import_buffer.default;
var { Buffer, SlowBuffer, INSPECT_MAX_BYTES, kMaxLength } = import_buffer.default;
var atob = globalThis.atob;
var btoa = globalThis.btoa;
var Blob = globalThis.Blob;
var File = globalThis.File;
var constants = { MAX_LENGTH: import_buffer.default.kMaxLength, MAX_STRING_LENGTH: 536870888 };
var kStringMaxLength = 536870888;
export {
  Blob,
  Buffer,
  File,
  INSPECT_MAX_BYTES,
  SlowBuffer,
  atob,
  btoa,
  constants,
  buffer_default as default,
  kMaxLength,
  kStringMaxLength
};
