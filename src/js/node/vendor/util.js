import {
  require_util
} from "./chunk-XKBIRNV5.js";
import "./chunk-GPGV3CPV.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/util.js
var import_util = __toESM(require_util());
var { format, deprecate, debuglog, inspect, types, isArray, isBoolean, isNull, isNullOrUndefined, isNumber, isString, isSymbol, isUndefined, isRegExp, isObject, isDate, isError, isFunction, isPrimitive, isBuffer, log, inherits, _extend, promisify, callbackify } = import_util.default;
var TextEncoder = globalThis.TextEncoder;
var TextDecoder = globalThis.TextDecoder;
var util_default = { ...import_util.default, TextEncoder, TextDecoder };
export {
  TextDecoder,
  TextEncoder,
  _extend,
  callbackify,
  debuglog,
  util_default as default,
  deprecate,
  format,
  inherits,
  inspect,
  isArray,
  isBoolean,
  isBuffer,
  isDate,
  isError,
  isFunction,
  isNull,
  isNullOrUndefined,
  isNumber,
  isObject,
  isPrimitive,
  isRegExp,
  isString,
  isSymbol,
  isUndefined,
  log,
  promisify,
  types
};
