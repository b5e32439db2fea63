import {
  require_string_decoder
} from "./chunk-A42EC4VY.js";
import "./chunk-WJRBNEN5.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/string_decoder.js
var import_string_decoder = __toESM(require_string_decoder());
var { StringDecoder } = import_string_decoder.default;
var string_decoder_default = import_string_decoder.default;
export {
  StringDecoder,
  string_decoder_default as default
};
