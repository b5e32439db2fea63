// edged runtime: the KVNamespace binding (Workers KV).
//
// Spec logic (types, option checks, value conversion) lives here; storage, limits
// and the edge cache are behind op_kv_* (src/js/kv.rs -> src/state/kv/). The
// ops take the binding's name and find its namespace in Rust.

import { primordials } from "ext:core/mod.js";
import {
  op_edged_body_collect,
  op_kv_delete,
  op_kv_get,
  op_kv_list,
  op_kv_put,
} from "ext:core/ops";
import { TextDecoder, TextEncoder } from "ext:deno_web/08_text_encoding.js";
import { ReadableStream, ReadableStreamPrototype } from "ext:deno_web/06_streams.js";
import {
  bytesOf,
  getReader,
  readerCancel,
  readerRead,
  readerReleaseLock,
  takeStreamRid,
} from "ext:edged/05_body.js";

const {
  ArrayIsArray,
  ArrayPrototypeIncludes,
  ArrayPrototypePush,
  JSONParse,
  JSONStringify,
  Map,
  MapPrototypeSet,
  Number,
  NumberIsFinite,
  ObjectPrototypeIsPrototypeOf,
  SafePromiseAll,
  String,
  StringPrototypeIncludes,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeSet,
  TypedArrayPrototypeSlice,
  TypeError,
  Uint8Array,
  uncurryThis,
} = primordials;

const MAX_VALUE_BYTES = 25 * 1024 * 1024;
const MAX_BULK_KEYS = 100;
const MIN_CACHE_TTL = 30;
const TYPES = ["text", "json", "arrayBuffer", "stream"];
const encode = uncurryThis(TextEncoder.prototype.encode);
const decode = uncurryThis(TextDecoder.prototype.decode);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parseGetOptions(options) {
  let type = "text";
  let cacheTtl;
  if (typeof options === "string") {
    type = options;
  } else if (options !== undefined && options !== null) {
    if (typeof options !== "object") {
      throw new TypeError("KV get() options must be a type string or an object");
    }
    if (options.type !== undefined) type = options.type;
    cacheTtl = options.cacheTtl;
  }
  if (!ArrayPrototypeIncludes(TYPES, type)) {
    throw new TypeError(
      `Unknown response type '${type}'. Possible types are "text", "arrayBuffer", "json", and "stream".`,
    );
  }
  if (cacheTtl !== undefined) {
    if (typeof cacheTtl !== "number" || !NumberIsFinite(cacheTtl) || cacheTtl < MIN_CACHE_TTL) {
      throw new TypeError(
        `KV GET failed: 400 Invalid cache_ttl of ${cacheTtl}. Cache TTL must be at least ${MIN_CACHE_TTL}.`,
      );
    }
  }
  return { type, cacheTtl: cacheTtl ?? 0 };
}

function convert(bytes, type) {
  switch (type) {
    case "text":
      return decode(decoder, bytes);
    case "json":
      return JSONParse(decode(decoder, bytes));
    case "arrayBuffer": {
      const buffer = TypedArrayPrototypeGetBuffer(bytes);
      return buffer.byteLength === TypedArrayPrototypeGetByteLength(bytes) &&
          TypedArrayPrototypeGetByteOffset(bytes) === 0
        ? buffer
        : TypedArrayPrototypeGetBuffer(TypedArrayPrototypeSlice(bytes));
    }
    case "stream":
      return new ReadableStream({
        start(controller) {
          if (TypedArrayPrototypeGetByteLength(bytes) > 0) controller.enqueue(bytes);
          controller.close();
        },
      });
  }
}

function parseMetadata(text) {
  return text === null || text === undefined ? null : JSONParse(text);
}

function tooLarge(atLeast) {
  return new TypeError(
    `KV PUT failed: 413 Value length of at least ${atLeast} exceeds limit of ${MAX_VALUE_BYTES}.`,
  );
}

async function readAll(stream) {
  // A body straight from Rust is collected there, without a trip per chunk.
  const rid = takeStreamRid(stream);
  if (rid !== null) {
    try {
      return await op_edged_body_collect(rid, MAX_VALUE_BYTES);
    } catch (e) {
      if (StringPrototypeIncludes(String(e?.message ?? ""), "exceeds")) {
        throw tooLarge(MAX_VALUE_BYTES + 1);
      }
      throw e;
    }
  }
  const reader = getReader(stream);
  const chunks = [];
  let total = 0;
  while (true) {
    const { done, value } = await readerRead(reader);
    if (done) break;
    if (!ObjectPrototypeIsPrototypeOf(Uint8Array.prototype, value)) {
      readerReleaseLock(reader);
      throw new TypeError("KV put() streams must produce Uint8Array chunks");
    }
    total += TypedArrayPrototypeGetByteLength(value);
    if (total > MAX_VALUE_BYTES) {
      await readerCancel(reader);
      throw tooLarge(total);
    }
    ArrayPrototypePush(chunks, value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (let i = 0; i < chunks.length; i++) {
    TypedArrayPrototypeSet(out, chunks[i], offset);
    offset += TypedArrayPrototypeGetByteLength(chunks[i]);
  }
  return out;
}

async function toBytes(value) {
  if (typeof value === "string") return encode(encoder, value);
  const bytes = bytesOf(value);
  if (bytes !== null) return bytes;
  if (ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, value)) return await readAll(value);
  throw new TypeError(
    "KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams as values.",
  );
}

export class KVNamespace {
  #binding;

  constructor(binding) {
    this.#binding = binding;
  }

  async #getOne(key, options, withMetadata) {
    const { type, cacheTtl } = parseGetOptions(options);
    const found = await op_kv_get(this.#binding, String(key), cacheTtl);
    if (!withMetadata) return found === null ? null : convert(found[0], type);
    if (found === null) return { value: null, metadata: null, cacheStatus: null };
    return {
      value: convert(found[0], type),
      metadata: parseMetadata(found[1]),
      cacheStatus: null,
    };
  }

  async #getMany(keys, options, withMetadata) {
    const { type, cacheTtl } = parseGetOptions(options);
    if (type !== "text" && type !== "json") {
      throw new TypeError(`KV bulk get() supports only the "text" and "json" types, not "${type}"`);
    }
    if (keys.length === 0 || keys.length > MAX_BULK_KEYS) {
      throw new TypeError(`KV GET_BULK failed: 400 You can request between 1 and ${MAX_BULK_KEYS} keys at once.`);
    }
    const names = [];
    for (let i = 0; i < keys.length; i++) ArrayPrototypePush(names, String(keys[i]));
    const pending = [];
    for (let i = 0; i < names.length; i++) {
      ArrayPrototypePush(pending, op_kv_get(this.#binding, names[i], cacheTtl));
    }
    const found = await SafePromiseAll(pending);
    const out = new Map();
    for (let i = 0; i < names.length; i++) {
      const f = found[i];
      const value = f === null ? null : convert(f[0], type);
      MapPrototypeSet(
        out,
        names[i],
        withMetadata ? { value, metadata: f === null ? null : parseMetadata(f[1]) } : value,
      );
    }
    return out;
  }

  get(key, options) {
    return ArrayIsArray(key) ? this.#getMany(key, options, false) : this.#getOne(key, options, false);
  }

  getWithMetadata(key, options) {
    return ArrayIsArray(key) ? this.#getMany(key, options, true) : this.#getOne(key, options, true);
  }

  async put(key, value, options = {}) {
    if (arguments.length < 2) {
      throw new TypeError("KV put() needs a key and a value");
    }
    if (options === null || typeof options !== "object") {
      throw new TypeError("KV put() options must be an object");
    }
    const bytes = await toBytes(value);
    const opts = {};
    if (options.expiration !== undefined) opts.expiration = Number(options.expiration);
    if (options.expirationTtl !== undefined) opts.expirationTtl = Number(options.expirationTtl);
    if (options.metadata !== undefined && options.metadata !== null) {
      const text = JSONStringify(options.metadata);
      if (text === undefined) throw new TypeError("KV put() metadata must be serializable to JSON");
      opts.metadata = text;
    }
    await op_kv_put(this.#binding, String(key), bytes, opts);
  }

  async delete(key) {
    await op_kv_delete(this.#binding, String(key));
  }

  async list(options = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("KV list() options must be an object");
    }
    const opts = {};
    if (options.prefix !== undefined && options.prefix !== null) opts.prefix = String(options.prefix);
    if (options.limit !== undefined) opts.limit = Number(options.limit);
    if (options.cursor !== undefined && options.cursor !== null) opts.cursor = String(options.cursor);
    const result = await op_kv_list(this.#binding, opts);
    result.cacheStatus = null;
    if (result.list_complete) delete result.cursor;
    return result;
  }
}
