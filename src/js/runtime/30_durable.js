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
//
// Which object a storage call is for, and the depth and subrequest count of a
// call to another object, are decided in Rust from the calling request's
// context; nothing here passes them.

import { core, primordials } from "ext:core/mod.js";
import {
  op_do_alarm_get,
  op_do_alarm_set,
  op_do_block,
  op_do_dirty,
  op_do_fetch,
  op_do_flush,
  op_do_id_from_name,
  op_do_id_unique,
  op_do_reset,
  op_do_rpc,
  op_do_sql_exec,
  op_do_sql_size,
  op_do_storage_delete,
  op_do_storage_delete_all,
  op_do_storage_get,
  op_do_storage_list,
  op_do_storage_put,
  op_do_txn,
  op_do_ws_auto_response,
  op_do_ws_auto_response_at,
  op_do_ws_event_timeout,
  op_do_ws_list,
  op_do_ws_set_auto_response,
  op_do_ws_set_event_timeout,
  op_do_ws_tags,
  op_edged_log,
} from "ext:core/ops";
import { beforeOutgoing, fromRemote } from "ext:edged/00_globals.js";
import { bytesOf, readableFromRid, takeStreamRid } from "ext:edged/05_body.js";
import { decodeAnswer, encodeArgs } from "ext:edged/25_rpc.js";
import { Request } from "ext:deno_fetch/23_request.js";
import { Response } from "ext:deno_fetch/23_response.js";
import {
  closedIncoming,
  fromHibernatable,
  hibernate,
  hidOf,
  socketResponse,
  WebSocketRequestResponsePair,
} from "ext:edged/15_websocket.js";

const {
  ArrayIsArray,
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  DatePrototypeGetTime,
  Error,
  FunctionPrototypeBind,
  Date,
  Map,
  MapPrototypeDelete,
  MapPrototypeGet,
  MapPrototypeSet,
  MathFloor,
  Number,
  NumberIsFinite,
  NumberIsInteger,
  ObjectEntries,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeCatch,
  PromiseResolve,
  Proxy,
  RangeError,
  ReflectGet,
  RegExpPrototypeTest,
  SafeMap,
  SafeRegExp,
  SafeWeakMap,
  String,
  TypeError,
  TypedArrayPrototypeSlice,
  TypedArrayPrototypeGetBuffer,
  Uint8Array,
  WeakMapPrototypeGet,
  WeakMapPrototypeSet,
} = primordials;
const DatePrototype = primordials.Date.prototype;

const ID_RE = new SafeRegExp("^[0-9a-f]{64}$");
const MAX_BATCH = 128;

async function objectFetch(args) {
  await beforeOutgoing();
  try {
    // binding, id, name, hint, [method, url, headers], bytes, stream rid
    return await op_do_fetch(
      args[0], args[1], args[2], args[8], [args[3], args[4], args[5]], args[6], args[7],
    );
  } catch (e) {
    throw fromRemote(e);
  }
}

async function objectRpc(binding, id, name, method, bytes, hint) {
  await beforeOutgoing();
  try {
    return await op_do_rpc(binding, id, name, method, bytes, hint);
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
    return ObjectPrototypeIsPrototypeOf(DurableObjectId.prototype, other) &&
      #hex in other && other.#hex === this.#hex;
  }
  get name() {
    return this.#name;
  }
  static hexOf(id) {
    return id.#hex;
  }
}
const hexOf = DurableObjectId.hexOf;
delete DurableObjectId.hexOf;

// A request body as the op takes it: [bytes, -1], or [null, rid] when it is a
// stream from Rust that nobody has read (a client's upload passed on), which
// then goes on as a stream with bounded memory, whatever its size.
async function bodyArgs(request) {
  if (request.body === null) return [null, -1];
  const rid = takeStreamRid(request.body);
  if (rid !== null) return [null, rid];
  return [new Uint8Array(await request.arrayBuffer()), -1];
}

function flatten(headers) {
  const flat = [];
  for (const [k, v] of headers) ArrayPrototypePush(flat, k, v);
  return flat;
}

class DurableObjectStub {
  #binding;
  #id;
  #hint;
  constructor(binding, id, hint) {
    this.#binding = binding;
    this.#id = id;
    // Where a new object should be placed (a region of the cluster).
    this.#hint = hint;
    // Unknown properties are RPC methods: stub.increment(5).
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop === "symbol" || prop in target) {
          const v = ReflectGet(target, prop, receiver);
          return typeof v === "function" ? FunctionPrototypeBind(v, target) : v;
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
    // A Request passed on with its body untouched (`stub.fetch(request)`):
    // its stream from Rust goes to the object as it is (new Request() would
    // put a JS pipe in between).
    let source = null;
    if (
      ObjectPrototypeIsPrototypeOf(Request.prototype, input) &&
      (init === undefined || init === null || init.body === undefined) &&
      input.body !== null && !input.bodyUsed
    ) {
      source = takeStreamRid(input.body);
    }
    const request = source === null ? new Request(input, init) : new Request(input.url, {
      method: init?.method ?? input.method,
      headers: init?.headers ?? input.headers,
    });
    const sent = source === null ? await bodyArgs(request) : [null, source];
    const result = await objectFetch([
      this.#binding,
      hexOf(this.#id),
      this.#id.name ?? "",
      request.method,
      request.url,
      flatten(request.headers),
      sent[0],
      sent[1],
      this.#hint,
    ]);
    const status = result[0];
    const flatHeaders = result[1];
    const rid = result[3];
    const headers = [];
    for (let i = 0; i + 1 < flatHeaders.length; i += 2) {
      ArrayPrototypePush(headers, [flatHeaders[i], flatHeaders[i + 1]]);
    }
    // A 101 with the object's end of a WebSocket (the chat-room pattern).
    if (result[4] !== null) return socketResponse(headers, result[4]);
    // A streamed response arrives as a stream resource and is read as it comes.
    let body = rid !== null ? readableFromRid(rid) : result[2];
    if (status === 101 || status === 204 || status === 205 || status === 304 || request.method === "HEAD") {
      if (rid !== null) core.tryClose(rid);
      body = null;
    }
    return new Response(body, { status, headers });
  }
  async #rpc(method, args) {
    const bytes = encodeArgs(args);
    const out = await objectRpc(
      this.#binding,
      hexOf(this.#id),
      this.#id.name ?? "",
      String(method),
      bytes,
      this.#hint,
    );
    return decodeAnswer(out);
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
    if (typeof hex !== "string" || !RegExpPrototypeTest(ID_RE, hex)) {
      throw new TypeError("Invalid Durable Object ID: it must be 64 lowercase hexadecimal digits.");
    }
    return new DurableObjectId(hex, undefined);
  }
  get(id, options) {
    if (!ObjectPrototypeIsPrototypeOf(DurableObjectId.prototype, id)) {
      throw new TypeError("DurableObjectNamespace.get() expects a DurableObjectId");
    }
    let hint = "";
    if (options !== undefined && options !== null) {
      const h = options.locationHint;
      if (h !== undefined) {
        if (typeof h !== "string") throw new TypeError("locationHint must be a string");
        hint = h;
      }
    }
    return new DurableObjectStub(this.#binding, id, hint);
  }
  getByName(name, options) {
    return this.get(this.idFromName(name), options);
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
  const out = [];
  for (let i = 0; i < keys.length; i++) ArrayPrototypePush(out, checkKey(keys[i]));
  return out;
}

function sqlBinding(v) {
  if (v === null || v === undefined) return [0, null, null];
  if (typeof v === "number") return NumberIsInteger(v) ? [1, v, null] : [2, v, null];
  if (typeof v === "bigint") return [1, Number(v), null];
  if (typeof v === "boolean") return [1, v ? 1 : 0, null];
  if (typeof v === "string") return [3, v, null];
  const bytes = bytesOf(v);
  if (bytes !== null) return [4, null, bytes];
  throw new TypeError(`SQL cannot bind a value of type ${typeof v}`);
}

function sqlValue(v) {
  return ObjectPrototypeIsPrototypeOf(Uint8Array.prototype, v)
    ? TypedArrayPrototypeGetBuffer(TypedArrayPrototypeSlice(v))
    : v;
}

// The result of ctx.storage.sql.exec(): rows are read eagerly.
class SqlCursor {
  #columns;
  #rows;
  #next = 0;
  constructor(out) {
    this.#columns = out.columnNames;
    const rows = out.rows;
    this.#rows = [];
    for (let i = 0; i < rows.length; i++) {
      const row = [];
      for (let j = 0; j < rows[i].length; j++) ArrayPrototypePush(row, sqlValue(rows[i][j]));
      ArrayPrototypePush(this.#rows, row);
    }
    this.rowsRead = out.rowsRead;
    this.rowsWritten = out.rowsWritten;
  }
  get columnNames() {
    return ArrayPrototypeSlice(this.#columns);
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
  [primordials.SymbolIterator]() {
    return this;
  }
  toArray() {
    const out = [];
    while (this.#next < this.#rows.length) ArrayPrototypePush(out, this.#object(this.#rows[this.#next++]));
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
    while (this.#next < this.#rows.length) yield ArrayPrototypeSlice(this.#rows[this.#next++]);
  }
}

class SqlStorage {
  exec(query, ...bindings) {
    if (typeof query !== "string") throw new TypeError("sql.exec() expects a query string");
    const values = [];
    for (let i = 0; i < bindings.length; i++) ArrayPrototypePush(values, sqlBinding(bindings[i]));
    return new SqlCursor(op_do_sql_exec(query, values));
  }
  get databaseSize() {
    return op_do_sql_size();
  }
}

// One object's storage. Objects of one worker version share an isolate; Rust
// takes the object from the calling event's context on every call.
export class DurableObjectStorage {
  #sql = new SqlStorage();
  get sql() {
    return this.#sql;
  }
  get(keys) {
    if (ArrayIsArray(keys)) {
      const names = batch(keys, "get()");
      const out = new Map();
      for (let i = 0; i < names.length; i++) {
        const v = op_do_storage_get(names[i]);
        if (v !== null) MapPrototypeSet(out, names[i], deserialize(v));
      }
      return PromiseResolve(out);
    }
    const v = op_do_storage_get(checkKey(keys));
    return PromiseResolve(v === null ? undefined : deserialize(v));
  }
  put(keyOrEntries, value) {
    if (typeof keyOrEntries === "object" && keyOrEntries !== null) {
      const entries = ObjectEntries(keyOrEntries);
      const keys = [];
      for (let i = 0; i < entries.length; i++) ArrayPrototypePush(keys, entries[i][0]);
      batch(keys, "put()");
      const serialized = [];
      for (let i = 0; i < entries.length; i++) ArrayPrototypePush(serialized, serialize(entries[i][1]));
      for (let i = 0; i < entries.length; i++) op_do_storage_put(keys[i], serialized[i]);
      return PromiseResolve();
    }
    op_do_storage_put(checkKey(keyOrEntries), serialize(value));
    return PromiseResolve();
  }
  delete(keys) {
    if (ArrayIsArray(keys)) {
      const names = batch(keys, "delete()");
      let n = 0;
      for (let i = 0; i < names.length; i++) if (op_do_storage_delete(names[i])) n++;
      return PromiseResolve(n);
    }
    return PromiseResolve(op_do_storage_delete(checkKey(keys)));
  }
  list(options = {}) {
    const opts = {};
    if (options.start !== undefined) opts.start = checkKey(options.start);
    if (options.startAfter !== undefined) opts.startAfter = checkKey(options.startAfter);
    if (options.end !== undefined) opts.end = checkKey(options.end);
    if (options.prefix !== undefined) opts.prefix = checkKey(options.prefix);
    if (options.reverse) opts.reverse = true;
    if (options.limit !== undefined) {
      if (!NumberIsInteger(options.limit) || options.limit < 1) {
        throw new TypeError("list() limit must be a positive integer");
      }
      opts.limit = options.limit;
    }
    const out = new Map();
    const entries = op_do_storage_list(opts);
    for (let i = 0; i < entries.length; i++) {
      MapPrototypeSet(out, entries[i][0], deserialize(entries[i][1]));
    }
    return PromiseResolve(out);
  }
  deleteAll() {
    op_do_storage_delete_all();
    return PromiseResolve();
  }
  setAlarm(scheduledTime) {
    const ms = ObjectPrototypeIsPrototypeOf(DatePrototype, scheduledTime)
      ? DatePrototypeGetTime(scheduledTime)
      : Number(scheduledTime);
    if (!NumberIsFinite(ms) || ms < 0) {
      throw new TypeError("setAlarm() expects a Date or a number of milliseconds since the epoch");
    }
    op_do_alarm_set(MathFloor(ms));
    return PromiseResolve();
  }
  getAlarm() {
    const at = op_do_alarm_get();
    return PromiseResolve(at < 0 ? null : at);
  }
  deleteAlarm() {
    op_do_alarm_set(-1);
    return PromiseResolve();
  }
  async transaction(closure) {
    op_do_txn("begin");
    try {
      const result = await closure(this);
      op_do_txn("commit");
      return result;
    } catch (e) {
      op_do_txn("rollback");
      throw e;
    }
  }
  transactionSync(closure) {
    op_do_txn("begin");
    try {
      const result = closure();
      op_do_txn("commit");
      return result;
    } catch (e) {
      op_do_txn("rollback");
      throw e;
    }
  }
}

// The output gate for outgoing messages: resolves once every write made so far
// by the objects in this isolate is durable (at once when there is none).
export function flushWrites() {
  return op_do_dirty() ? op_do_flush() : undefined;
}

// The WebSocket object for a hibernatable socket, one per socket and
// activation (so the same socket is the same object within an activation).
const socketsOf = new SafeWeakMap();
export function hibernatableSocket(state, hid, closedOut = false) {
  const map = WeakMapPrototypeGet(socketsOf, state);
  let ws = MapPrototypeGet(map, hid);
  if (ws === undefined) {
    ws = fromHibernatable(hid, closedOut);
    MapPrototypeSet(map, hid, ws);
  }
  return ws;
}
// The client closed a hibernatable socket: after its close event, it is gone.
export function hibernatableClosed(state, hid) {
  const ws = hibernatableSocket(state, hid, true);
  closedIncoming(ws);
  MapPrototypeDelete(WeakMapPrototypeGet(socketsOf, state), hid);
  return ws;
}

export class DurableObjectState {
  #waitUntil = [];
  constructor(id) {
    this.id = id;
    this.storage = new DurableObjectStorage();
    WeakMapPrototypeSet(socketsOf, this, new SafeMap());
  }
  // Hibernatable WebSockets: the runtime holds the socket (and its tags,
  // attachment and auto-response), so the object may hibernate while it is
  // open; its messages arrive as webSocketMessage/webSocketClose events.
  acceptWebSocket(ws, tags = undefined) {
    const list = [];
    if (tags !== undefined && tags !== null) {
      for (const tag of tags) ArrayPrototypePush(list, String(tag));
    }
    const hid = hibernate(ws, list);
    MapPrototypeSet(WeakMapPrototypeGet(socketsOf, this), hid, ws);
  }
  getWebSockets(tag = undefined) {
    const views = op_do_ws_list(tag === undefined || tag === null ? null : String(tag));
    const out = [];
    for (let i = 0; i < views.length; i++) {
      ArrayPrototypePush(out, hibernatableSocket(this, views[i][0], views[i][1]));
    }
    return out;
  }
  getTags(ws) {
    const hid = hidOf(ws);
    if (hid === null) {
      throw new TypeError("getTags() takes a WebSocket accepted with acceptWebSocket().");
    }
    return op_do_ws_tags(hid);
  }
  setWebSocketAutoResponse(pair = undefined) {
    if (pair === undefined || pair === null) {
      op_do_ws_set_auto_response(null);
      return;
    }
    if (!ObjectPrototypeIsPrototypeOf(WebSocketRequestResponsePair.prototype, pair)) {
      throw new TypeError("setWebSocketAutoResponse() takes a WebSocketRequestResponsePair.");
    }
    op_do_ws_set_auto_response([pair.request, pair.response]);
  }
  getWebSocketAutoResponse() {
    const pair = op_do_ws_auto_response();
    return pair === null ? null : new WebSocketRequestResponsePair(pair[0], pair[1]);
  }
  getWebSocketAutoResponseTimestamp(ws) {
    const hid = hidOf(ws);
    if (hid === null) return null;
    const at = op_do_ws_auto_response_at(hid);
    return at === null ? null : new Date(at);
  }
  setHibernatableWebSocketEventTimeout(ms = undefined) {
    if (ms === undefined || ms === null || ms === 0) {
      op_do_ws_set_event_timeout(null);
      return;
    }
    ms = Number(ms);
    if (!NumberIsFinite(ms) || ms < 0) throw new TypeError("The event timeout must be a number of milliseconds.");
    op_do_ws_set_event_timeout(MathFloor(ms));
  }
  getHibernatableWebSocketEventTimeout() {
    return op_do_ws_event_timeout();
  }
  waitUntil(promise) {
    ArrayPrototypePush(
      this.#waitUntil,
      PromisePrototypeCatch(PromiseResolve(promise), (e) => {
        op_edged_log(3, `waitUntil promise rejected: ${String(e?.stack ?? e)}`);
      }),
    );
  }
  // No event is delivered to the object until the closure settles, even while
  // it awaits non-storage I/O (the actor holds its queue while this is open).
  // If the closure throws, the object is reset, as in Workers: its queued
  // events fail and the next one constructs it afresh.
  async blockConcurrencyWhile(closure) {
    op_do_block(true);
    try {
      return await closure();
    } catch (e) {
      op_do_reset(`blockConcurrencyWhile() callback threw: ${e?.message ?? e}`);
      throw e;
    } finally {
      op_do_block(false);
    }
  }
}
