// edged runtime: the KVNamespace binding (Workers KV).
//
// Spec logic (types, option checks, value conversion) lives here; storage, limits
// and the edge cache are behind op_kv_* (src/js/kv.rs -> src/state/kv/).

import {
  op_kv_delete,
  op_kv_get,
  op_kv_list,
  op_kv_put,
  op_edged_body_collect,
} from "ext:core/ops";
import { assertLive } from "ext:edged/00_globals.js";
import { takeStreamRid } from "ext:edged/05_body.js";
import { ReadableStream } from "ext:deno_web/06_streams.js";

const MAX_VALUE_BYTES = 25 * 1024 * 1024;
const MAX_BULK_KEYS = 100;
const MIN_CACHE_TTL = 30;
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
  if (!["text", "json", "arrayBuffer", "stream"].includes(type)) {
    throw new TypeError(
      `Unknown response type '${type}'. Possible types are "text", "arrayBuffer", "json", and "stream".`,
    );
  }
  if (cacheTtl !== undefined) {
    if (typeof cacheTtl !== "number" || !Number.isFinite(cacheTtl) || cacheTtl < MIN_CACHE_TTL) {
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
      return decoder.decode(bytes);
    case "json":
      return JSON.parse(decoder.decode(bytes));
    case "arrayBuffer":
      return bytes.buffer.byteLength === bytes.byteLength && bytes.byteOffset === 0
        ? bytes.buffer
        : bytes.slice().buffer;
    case "stream":
      return new ReadableStream({
        start(controller) {
          if (bytes.byteLength > 0) controller.enqueue(bytes);
          controller.close();
        },
      });
  }
}

function parseMetadata(text) {
  return text === null || text === undefined ? null : JSON.parse(text);
}

async function readAll(stream) {
  // A body straight from Rust is collected there, without a trip per chunk.
  const rid = takeStreamRid(stream);
  if (rid !== null) {
    try {
      return await op_edged_body_collect(rid, MAX_VALUE_BYTES);
    } catch (e) {
      if (/exceeds/.test(e?.message ?? "")) {
        throw new TypeError(
          `KV PUT failed: 413 Value length of at least ${MAX_VALUE_BYTES + 1} exceeds limit of ${MAX_VALUE_BYTES}.`,
        );
      }
      throw e;
    }
  }
  const reader = stream.getReader();
  const chunks = [];
  let total = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    if (!(value instanceof Uint8Array)) {
      reader.releaseLock();
      throw new TypeError("KV put() streams must produce Uint8Array chunks");
    }
    total += value.byteLength;
    if (total > MAX_VALUE_BYTES) {
      await reader.cancel();
      throw new TypeError(
        `KV PUT failed: 413 Value length of at least ${total} exceeds limit of ${MAX_VALUE_BYTES}.`,
      );
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

async function toBytes(value) {
  if (typeof value === "string") return encoder.encode(value);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ReadableStream) return await readAll(value);
  throw new TypeError(
    "KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and ReadableStreams as values.",
  );
}

export class KVNamespace {
  #namespace;

  constructor(namespace) {
    this.#namespace = namespace;
  }

  async #getOne(key, options, withMetadata) {
    const { type, cacheTtl } = parseGetOptions(options);
    assertLive("KV get()");
    const found = await op_kv_get(this.#namespace, String(key), cacheTtl);
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
    const names = keys.map((k) => String(k));
    assertLive("KV get()");
    const found = await Promise.all(names.map((k) => op_kv_get(this.#namespace, k, cacheTtl)));
    const out = new Map();
    for (let i = 0; i < names.length; i++) {
      const f = found[i];
      const value = f === null ? null : convert(f[0], type);
      out.set(names[i], withMetadata ? { value, metadata: f === null ? null : parseMetadata(f[1]) } : value);
    }
    return out;
  }

  get(key, options) {
    return Array.isArray(key) ? this.#getMany(key, options, false) : this.#getOne(key, options, false);
  }

  getWithMetadata(key, options) {
    return Array.isArray(key) ? this.#getMany(key, options, true) : this.#getOne(key, options, true);
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
      const text = JSON.stringify(options.metadata);
      if (text === undefined) throw new TypeError("KV put() metadata must be serializable to JSON");
      opts.metadata = text;
    }
    assertLive("KV put()");
    await op_kv_put(this.#namespace, String(key), bytes, opts);
  }

  async delete(key) {
    assertLive("KV delete()");
    await op_kv_delete(this.#namespace, String(key));
  }

  async list(options = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("KV list() options must be an object");
    }
    const opts = {};
    if (options.prefix !== undefined && options.prefix !== null) opts.prefix = String(options.prefix);
    if (options.limit !== undefined) opts.limit = Number(options.limit);
    if (options.cursor !== undefined && options.cursor !== null) opts.cursor = String(options.cursor);
    assertLive("KV list()");
    const result = await op_kv_list(this.#namespace, opts);
    result.cacheStatus = null;
    if (result.list_complete) delete result.cursor;
    return result;
  }
}
