// node:crypto — hashes and HMACs in Rust (synchronous, as Node's are;
// src/js/node.rs), randomness and everything else over Web Crypto.
import { Buffer } from "./buffer.js";

const n = globalThis.__edged_cloudflare_workers?.node;
if (n === undefined) {
  throw new Error("node:crypto can only be imported while a worker's modules first evaluate");
}
const { digest: rustDigest, hmac: rustHmac, timingSafeEqual: rustTimingSafeEqual } = n;
const webcrypto = globalThis.crypto;
const subtle = webcrypto.subtle;

const HASHES = ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"];
// The names the Rust side takes (src/js/node.rs), lower-cased.
const NAMES = new Set([...HASHES, "sha-1", "sha-224", "sha-256", "sha-384", "sha-512"]);

function toBytes(data, encoding, name = "data") {
  if (typeof data === "string") return Buffer.from(data, encoding ?? "utf8");
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer || data instanceof SharedArrayBuffer) return new Uint8Array(data);
  const err = new TypeError(
    `The "${name}" argument must be of type string or an instance of Buffer, TypedArray, or DataView.`,
  );
  err.code = "ERR_INVALID_ARG_TYPE";
  throw err;
}

function output(bytes, encoding) {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return encoding === undefined || encoding === "buffer" ? buf : buf.toString(encoding);
}

function concat(chunks) {
  if (chunks.length === 1) return chunks[0];
  let size = 0;
  for (const c of chunks) size += c.byteLength;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function checkAlgorithm(algorithm, message) {
  if (typeof algorithm !== "string" || !NAMES.has(algorithm.toLowerCase())) {
    throw new Error(message);
  }
}

class Digester {
  #chunks = [];
  #done = false;
  #finish;
  constructor(finish) {
    this.#finish = finish;
  }
  update(data, inputEncoding = undefined) {
    if (this.#done) {
      const err = new Error("Digest already called");
      err.code = "ERR_CRYPTO_HASH_FINALIZED";
      throw err;
    }
    // Copied: the caller may reuse its buffer before digest().
    this.#chunks.push(toBytes(data, inputEncoding).slice());
    return this;
  }
  digest(outputEncoding = undefined) {
    if (this.#done) {
      const err = new Error("Digest already called");
      err.code = "ERR_CRYPTO_HASH_FINALIZED";
      throw err;
    }
    this.#done = true;
    return output(this.#finish(concat(this.#chunks.length ? this.#chunks : [new Uint8Array(0)])), outputEncoding);
  }
  static chunksOf(d) {
    if (d.#done) {
      const err = new Error("Digest already called");
      err.code = "ERR_CRYPTO_HASH_FINALIZED";
      throw err;
    }
    return d.#chunks;
  }
}

export class Hash extends Digester {
  #algorithm;
  constructor(algorithm) {
    checkAlgorithm(algorithm, "Digest method not supported");
    super((bytes) => rustDigest(algorithm, bytes));
    this.#algorithm = algorithm;
  }
  copy() {
    const h = new Hash(this.#algorithm);
    for (const c of Digester.chunksOf(this)) h.update(c);
    return h;
  }
}

export class Hmac extends Digester {
  constructor(algorithm, key, _options) {
    checkAlgorithm(algorithm, "Invalid digest");
    const k = key?.type === "secret" && key.export ? key.export() : toBytes(key, undefined, "key").slice();
    super((bytes) => rustHmac(algorithm, k, bytes));
  }
}

export function createHash(algorithm, _options) {
  return new Hash(algorithm);
}

export function createHmac(algorithm, key, options) {
  return new Hmac(algorithm, key, options);
}

export function hash(algorithm, data, outputEncoding = "hex") {
  checkAlgorithm(algorithm, "Digest method not supported");
  return output(rustDigest(algorithm, toBytes(data)), outputEncoding);
}

export function getHashes() {
  return HASHES.slice();
}

export function getCiphers() {
  return [];
}

export function getCurves() {
  return [];
}

export function timingSafeEqual(a, b) {
  const x = toBytes(a, undefined, "buf1");
  const y = toBytes(b, undefined, "buf2");
  if (x.byteLength !== y.byteLength) {
    const err = new RangeError("Input buffers must have the same byte length");
    err.code = "ERR_CRYPTO_TIMING_SAFE_EQUAL_LENGTH";
    throw err;
  }
  return rustTimingSafeEqual(x, y);
}

const MAX_RANDOM = 65536;
function fill(view) {
  for (let at = 0; at < view.byteLength; at += MAX_RANDOM) {
    webcrypto.getRandomValues(
      new Uint8Array(view.buffer, view.byteOffset + at, Math.min(MAX_RANDOM, view.byteLength - at)),
    );
  }
  return view;
}

function checkSize(size) {
  if (typeof size !== "number" || !Number.isInteger(size) || size < 0 || size > 2 ** 31 - 1) {
    const err = new RangeError(`The value of "size" is out of range. It must be >= 0 && <= 2147483647. Received ${size}`);
    err.code = "ERR_OUT_OF_RANGE";
    throw err;
  }
}

export function randomBytes(size, callback = undefined) {
  checkSize(size);
  const buf = Buffer.alloc(size);
  fill(buf);
  if (typeof callback === "function") {
    queueMicrotask(() => callback(null, buf));
    return;
  }
  return buf;
}

export const pseudoRandomBytes = randomBytes;

export function randomFillSync(buf, offset = 0, size = undefined) {
  const bytes = toBytes(buf, undefined, "buf");
  const end = size === undefined ? bytes.byteLength : offset + size;
  if (offset < 0 || end > bytes.byteLength || offset > end) {
    throw new RangeError('The value of "offset" or "size" is out of range');
  }
  fill(bytes.subarray(offset, end));
  return buf;
}

export function randomFill(buf, offset, size, callback) {
  if (typeof offset === "function") [offset, size, callback] = [0, undefined, offset];
  else if (typeof size === "function") [size, callback] = [undefined, size];
  randomFillSync(buf, offset, size);
  queueMicrotask(() => callback(null, buf));
}

export function randomInt(min, max = undefined, callback = undefined) {
  if (typeof max === "function" || max === undefined) {
    callback = max;
    max = min;
    min = 0;
  }
  if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max <= min || max - min > 2 ** 48) {
    const err = new RangeError(`The value of "max" is out of range. It must be greater than the value of "min" (${min}) and at most 2^48 above it. Received ${max}`);
    err.code = "ERR_OUT_OF_RANGE";
    throw err;
  }
  const range = max - min;
  // Rejection sampling over 48 random bits: no modulo bias.
  const limit = 2 ** 48 - (2 ** 48 % range);
  let value;
  do {
    const b = fill(new Uint8Array(6));
    value = b[0] * 2 ** 40 + b[1] * 2 ** 32 + b[2] * 2 ** 24 + b[3] * 2 ** 16 + b[4] * 2 ** 8 + b[5];
  } while (value >= limit);
  const result = min + (value % range);
  if (typeof callback === "function") {
    queueMicrotask(() => callback(null, result));
    return;
  }
  return result;
}

export function randomUUID() {
  return webcrypto.randomUUID();
}

export function getRandomValues(view) {
  return webcrypto.getRandomValues(view);
}

const PBKDF2_HASHES = { sha1: "SHA-1", sha256: "SHA-256", sha384: "SHA-384", sha512: "SHA-512" };
export function pbkdf2(password, salt, iterations, keylen, digest, callback) {
  const hashName = PBKDF2_HASHES[String(digest).toLowerCase().replace("-", "")];
  if (hashName === undefined) throw new TypeError(`Invalid digest: ${digest}`);
  if (typeof callback !== "function") throw new TypeError('The "callback" argument must be of type function');
  subtle
    .importKey("raw", toBytes(password, undefined, "password"), "PBKDF2", false, ["deriveBits"])
    .then((key) =>
      subtle.deriveBits({ name: "PBKDF2", hash: hashName, salt: toBytes(salt, undefined, "salt"), iterations }, key, keylen * 8),
    )
    .then((bits) => callback(null, Buffer.from(bits)), (e) => callback(e));
}

export const constants = Object.freeze({ __proto__: null });

function notSupported(name) {
  return function () {
    const err = new Error(`crypto.${name} is not implemented in edged`);
    err.code = "ERR_METHOD_NOT_IMPLEMENTED";
    throw err;
  };
}
export const createCipheriv = notSupported("createCipheriv");
export const createDecipheriv = notSupported("createDecipheriv");
export const createSign = notSupported("createSign");
export const createVerify = notSupported("createVerify");
export const pbkdf2Sync = notSupported("pbkdf2Sync");
export const scryptSync = notSupported("scryptSync");
export const generateKeyPairSync = notSupported("generateKeyPairSync");

export { webcrypto, subtle };

export default {
  Hash,
  Hmac,
  createHash,
  createHmac,
  hash,
  getHashes,
  getCiphers,
  getCurves,
  timingSafeEqual,
  randomBytes,
  pseudoRandomBytes,
  randomFillSync,
  randomFill,
  randomInt,
  randomUUID,
  getRandomValues,
  pbkdf2,
  constants,
  createCipheriv,
  createDecipheriv,
  createSign,
  createVerify,
  pbkdf2Sync,
  scryptSync,
  generateKeyPairSync,
  webcrypto,
  subtle,
};
