// edged runtime: Durable Objects as a worker sees them -- namespaces, ids, stubs
// -- and as an object sees itself -- its state and storage.
//
// Calls go through op_do_* (src/js/durable.rs). Storage values are structured
// clones (V8's serializer). Writes are buffered by the object's store and
// committed by its actor when the event ends; the response waits for that commit
// (the output gate). Storage calls complete without yielding to the event loop,
// so no other event can slip in while one awaits storage (the input gate); an
// event that awaits anything else (fetch, a timer, another object) lets the next
// event in, as in Workers, unless blockConcurrencyWhile() or an open
// transaction() holds the gate.

import { core } from "ext:core/mod.js";
import {
  op_do_alarm_get,
  op_do_alarm_set,
  op_do_block,
  op_do_reset,
  op_do_dirty,
  op_do_flush,
  op_do_fetch,
  op_do_id_from_name,
  op_do_id_unique,
  op_do_rpc,
  op_do_sql_exec,
  op_do_sql_size,
  op_do_storage_delete,
  op_do_storage_delete_all,
  op_do_storage_get,
  op_do_storage_list,
  op_do_storage_put,
  op_do_txn,
} from "ext:core/ops";
import { assertLive, beforeOutgoing, currentDepth, fromRemote } from "ext:edged/00_globals.js";
import { readableFromRid } from "ext:edged/05_body.js";

const ID_RE = /^[0-9a-f]{64}$/;
const MAX_BATCH = 128;

async function op_do_fetch_wrapped(...args) {
  assertLive("Durable Object fetch()");
  await beforeOutgoing();
  try {
    return await op_do_fetch(...args);
  } catch (e) {
    throw fromRemote(e);
  }
}

async function op_do_rpc_wrapped(...args) {
  assertLive("Durable Object RPC");
  await beforeOutgoing();
  try {
    return await op_do_rpc(...args);
  } catch (e) {
    throw fromRemote(e);
  }
}

export class DurableObjectId {
  #hex;
  #name;
  constructor(hex, name) {
    this.#hex = hex;
    this.#name = name;
  }
  toString() {
    return this.#hex;
  }
  equals(other) {
    return other instanceof DurableObjectId && other.toString() === this.#hex;
  }
  get name() {
    return this.#name;
  }
}

async function bodyBytes(request) {
  if (request.body === null) return null;
  return new Uint8Array(await request.arrayBuffer());
}

function flatten(headers) {
  const flat = [];
  for (const [k, v] of headers) flat.push(k, v);
  return flat;
}

class DurableObjectStub {
  #binding;
  #id;
  constructor(binding, id) {
    this.#binding = binding;
    this.#id = id;
    // Unknown properties are RPC methods: stub.increment(5).
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop === "symbol" || prop in target) {
          const v = Reflect.get(target, prop, receiver);
          return typeof v === "function" ? v.bind(target) : v;
        }
        if (prop === "then") return undefined;
        return (...args) => target.#rpc(prop, args);
      },
    });
  }
  get id() {
    return this.#id;
  }
  get name() {
    return this.#id.name;
  }
  async fetch(input, init) {
    const request = new Request(input, init);
    const result = await op_do_fetch_wrapped(
      this.#binding,
      this.#id.toString(),
      this.#id.name ?? "",
      request.method,
      request.url,
      flatten(request.headers),
      await bodyBytes(request),
      currentDepth() + 1,
    );
    const [status, flatHeaders, bytes, rid] = result;
    const headers = [];
    for (let i = 0; i + 1 < flatHeaders.length; i += 2) headers.push([flatHeaders[i], flatHeaders[i + 1]]);
    // A streamed response arrives as a stream resource and is read as it comes.
    let body = rid !== null ? readableFromRid(rid) : bytes;
    if (status === 101 || status === 204 || status === 205 || status === 304 || request.method === "HEAD") {
      if (rid !== null) core.tryClose(rid);
      body = null;
    }
    return new Response(body, { status, headers });
  }
  async #rpc(method, args) {
    const out = await op_do_rpc_wrapped(
      this.#binding,
      this.#id.toString(),
      this.#id.name ?? "",
      method,
      core.serialize(args, { forStorage: true }),
      currentDepth() + 1,
    );
    return core.deserialize(out, { forStorage: true });
  }
}

export class DurableObjectNamespace {
  #binding;
  constructor(binding) {
    this.#binding = binding;
  }
  idFromName(name) {
    const n = String(name);
    return new DurableObjectId(op_do_id_from_name(this.#binding, n), n);
  }
  newUniqueId() {
    return new DurableObjectId(op_do_id_unique(), undefined);
  }
  idFromString(hex) {
    if (typeof hex !== "string" || !ID_RE.test(hex)) {
      throw new TypeError("Invalid Durable Object ID: it must be 64 lowercase hexadecimal digits.");
    }
    return new DurableObjectId(hex, undefined);
  }
  get(id) {
    if (!(id instanceof DurableObjectId)) {
      throw new TypeError("DurableObjectNamespace.get() expects a DurableObjectId");
    }
    return new DurableObjectStub(this.#binding, id);
  }
  getByName(name) {
    return this.get(this.idFromName(name));
  }
}

function checkKey(key) {
  if (typeof key !== "string") throw new TypeError("Durable Object storage keys must be strings");
  return key;
}

function serialize(value) {
  if (value === undefined) throw new TypeError("Durable Object storage cannot store undefined");
  return core.serialize(value, { forStorage: true });
}

function deserialize(bytes) {
  return core.deserialize(bytes, { forStorage: true });
}

function batch(keys, what) {
  if (keys.length > MAX_BATCH) {
    throw new RangeError(`Durable Object storage ${what} takes at most ${MAX_BATCH} keys at once (got ${keys.length})`);
  }
  return keys.map(checkKey);
}

function sqlBinding(v) {
  if (v === null || v === undefined) return [0, null, null];
  if (typeof v === "number") return Number.isInteger(v) ? [1, v, null] : [2, v, null];
  if (typeof v === "bigint") return [1, Number(v), null];
  if (typeof v === "boolean") return [1, v ? 1 : 0, null];
  if (typeof v === "string") return [3, v, null];
  if (v instanceof ArrayBuffer) return [4, null, new Uint8Array(v)];
  if (ArrayBuffer.isView(v)) return [4, null, new Uint8Array(v.buffer, v.byteOffset, v.byteLength)];
  throw new TypeError(`SQL cannot bind a value of type ${typeof v}`);
}

function sqlValue(v) {
  return v instanceof Uint8Array ? v.slice().buffer : v;
}

// The result of ctx.storage.sql.exec(): rows are read eagerly.
class SqlCursor {
  #columns;
  #rows;
  #next = 0;
  constructor(out) {
    this.#columns = out.columnNames;
    this.#rows = out.rows.map((r) => r.map(sqlValue));
    this.rowsRead = out.rowsRead;
    this.rowsWritten = out.rowsWritten;
  }
  get columnNames() {
    return [...this.#columns];
  }
  #object(row) {
    const o = {};
    for (let i = 0; i < this.#columns.length; i++) o[this.#columns[i]] = row[i];
    return o;
  }
  next() {
    if (this.#next >= this.#rows.length) return { done: true, value: undefined };
    return { done: false, value: this.#object(this.#rows[this.#next++]) };
  }
  [Symbol.iterator]() {
    return this;
  }
  toArray() {
    const out = [];
    for (const row of this) out.push(row);
    return out;
  }
  one() {
    const rest = this.toArray();
    if (rest.length !== 1) {
      throw new Error(`Expected exactly one result from SQL query, but got ${rest.length === 0 ? "no results" : "multiple results"}.`);
    }
    return rest[0];
  }
  *raw() {
    while (this.#next < this.#rows.length) yield [...this.#rows[this.#next++]];
  }
}

class SqlStorage {
  #slot;
  constructor(slot) {
    this.#slot = slot;
  }
  exec(query, ...bindings) {
    if (typeof query !== "string") throw new TypeError("sql.exec() expects a query string");
    return new SqlCursor(op_do_sql_exec(this.#slot, query, bindings.map(sqlBinding)));
  }
  get databaseSize() {
    return op_do_sql_size(this.#slot);
  }
}

// One object's storage. Objects of one worker version share an isolate, so
// every call names its object's slot in that isolate.
export class DurableObjectStorage {
  #slot;
  #sql;
  constructor(slot) {
    this.#slot = slot;
    this.#sql = new SqlStorage(slot);
  }
  get sql() {
    return this.#sql;
  }
  get(keys) {
    if (Array.isArray(keys)) {
      const out = new Map();
      for (const k of batch(keys, "get()")) {
        const v = op_do_storage_get(this.#slot, k);
        if (v !== null) out.set(k, deserialize(v));
      }
      return Promise.resolve(out);
    }
    const v = op_do_storage_get(this.#slot, checkKey(keys));
    return Promise.resolve(v === null ? undefined : deserialize(v));
  }
  put(keyOrEntries, value) {
    if (typeof keyOrEntries === "object" && keyOrEntries !== null) {
      const entries = Object.entries(keyOrEntries);
      batch(entries.map(([k]) => k), "put()");
      const serialized = entries.map(([k, v]) => [k, serialize(v)]);
      for (const [k, bytes] of serialized) op_do_storage_put(this.#slot, k, bytes);
      return Promise.resolve();
    }
    op_do_storage_put(this.#slot, checkKey(keyOrEntries), serialize(value));
    return Promise.resolve();
  }
  delete(keys) {
    if (Array.isArray(keys)) {
      let n = 0;
      for (const k of batch(keys, "delete()")) if (op_do_storage_delete(this.#slot, k)) n++;
      return Promise.resolve(n);
    }
    return Promise.resolve(op_do_storage_delete(this.#slot, checkKey(keys)));
  }
  list(options = {}) {
    const opts = {};
    for (const k of ["start", "startAfter", "end", "prefix"]) {
      if (options[k] !== undefined) opts[k] = checkKey(options[k]);
    }
    if (options.reverse) opts.reverse = true;
    if (options.limit !== undefined) {
      if (!Number.isInteger(options.limit) || options.limit < 1) {
        throw new TypeError("list() limit must be a positive integer");
      }
      opts.limit = options.limit;
    }
    const out = new Map();
    for (const [k, v] of op_do_storage_list(this.#slot, opts)) out.set(k, deserialize(v));
    return Promise.resolve(out);
  }
  deleteAll() {
    op_do_storage_delete_all(this.#slot);
    return Promise.resolve();
  }
  setAlarm(scheduledTime) {
    const ms = scheduledTime instanceof Date ? scheduledTime.getTime() : Number(scheduledTime);
    if (!Number.isFinite(ms) || ms < 0) {
      throw new TypeError("setAlarm() expects a Date or a number of milliseconds since the epoch");
    }
    op_do_alarm_set(this.#slot, Math.floor(ms));
    return Promise.resolve();
  }
  getAlarm() {
    const at = op_do_alarm_get(this.#slot);
    return Promise.resolve(at < 0 ? null : at);
  }
  deleteAlarm() {
    op_do_alarm_set(this.#slot, -1);
    return Promise.resolve();
  }
  async transaction(closure) {
    op_do_txn(this.#slot, "begin");
    try {
      const result = await closure(this);
      op_do_txn(this.#slot, "commit");
      return result;
    } catch (e) {
      op_do_txn(this.#slot, "rollback");
      throw e;
    }
  }
  transactionSync(closure) {
    op_do_txn(this.#slot, "begin");
    try {
      const result = closure();
      op_do_txn(this.#slot, "commit");
      return result;
    } catch (e) {
      op_do_txn(this.#slot, "rollback");
      throw e;
    }
  }
}

// The output gate for outgoing messages: resolves once every write made so far
// by the objects in this isolate is durable (at once when there is none).
export function flushWrites() {
  return op_do_dirty() ? op_do_flush() : undefined;
}

export class DurableObjectState {
  #waitUntil = [];
  #slot;
  constructor(id, slot) {
    this.id = id;
    this.#slot = slot;
    this.storage = new DurableObjectStorage(slot);
  }
  waitUntil(promise) {
    this.#waitUntil.push(Promise.resolve(promise).catch((e) => globalThis.console.error("waitUntil promise rejected:", e)));
  }
  // No event is delivered to the object until the closure settles, even while
  // it awaits non-storage I/O (the actor holds its queue while this is open).
  // If the closure throws, the object is reset, as in Workers: its queued
  // events fail and the next one constructs it afresh.
  async blockConcurrencyWhile(closure) {
    op_do_block(this.#slot, true);
    try {
      return await closure();
    } catch (e) {
      op_do_reset(this.#slot, `blockConcurrencyWhile() callback threw: ${e?.message ?? e}`);
      throw e;
    } finally {
      op_do_block(this.#slot, false);
    }
  }
}
