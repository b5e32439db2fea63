import {
  require_buffer
} from "./chunk-WJRBNEN5.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/buffer.js
var import_buffer = __toESM(require_buffer());
var { Buffer, SlowBuffer, INSPECT_MAX_BYTES, kMaxLength } = import_buffer.default;
{
  const B = import_buffer.default.Buffer;
  const isUrl = (e) => typeof e === "string" && e.toLowerCase() === "base64url";
  const toUrl = (s) => s.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const { toString, write } = B.prototype;
  const { from, byteLength, isEncoding, alloc } = B;
  B.prototype.toString = function(encoding, start, end) {
    return isUrl(encoding) ? toUrl(toString.call(this, "base64", start, end)) : toString.apply(this, arguments);
  };
  B.prototype.write = function(string, offset, length, encoding) {
    if (isUrl(offset)) return write.call(this, string, "base64");
    if (isUrl(length)) return write.call(this, string, offset, "base64");
    if (isUrl(encoding)) return write.call(this, string, offset, length, "base64");
    return write.apply(this, arguments);
  };
  B.from = function(value, encoding, length) {
    return isUrl(encoding) ? from.call(B, value, "base64") : from.apply(B, arguments);
  };
  B.byteLength = function(string, encoding) {
    return isUrl(encoding) ? byteLength.call(B, string, "base64") : byteLength.apply(B, arguments);
  };
  B.isEncoding = function(encoding) {
    return isUrl(encoding) || isEncoding.call(B, encoding);
  };
  B.alloc = function(size, fill, encoding) {
    return isUrl(encoding) ? alloc.call(B, size, fill, "base64") : alloc.apply(B, arguments);
  };
}
var atob = globalThis.atob;
var btoa = globalThis.btoa;
var Blob = globalThis.Blob;
var File = globalThis.File;
var constants = { MAX_LENGTH: import_buffer.default.kMaxLength, MAX_STRING_LENGTH: 536870888 };
var kStringMaxLength = 536870888;
var buffer_default = { ...import_buffer.default, atob, btoa, Blob, File, constants, kStringMaxLength };
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
