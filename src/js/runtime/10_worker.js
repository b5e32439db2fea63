// edged runtime: binding a tenant's module to the isolate and dispatching events.
//
// Rust drives this in two steps per isolate (src/js/worker.rs):
//   1. prepare(bindings, options): builds `env` and the `cloudflare:workers`
//      exports the tenant's modules may import;
//   2. bind(namespace): checks the main module's default export and returns the
//      dispatch function that Rust calls once per request.
// Rust enters each dispatch with the request's context set (src/js/context.rs),
// so everything the handler starts runs for that request; nothing here names
// the request. dispatch() never rejects: it resolves to [status, flatHeaders,
// body] or to ["error", kind, message] so that Rust can tell a tenant bug from a
// response.

import { primordials } from "ext:core/mod.js";
import {
  op_do_alarm_get,
  op_do_alarm_set,
  op_edged_async_set_stores,
  op_edged_async_stores,
  op_edged_body_close,
  op_edged_body_open,
  op_edged_body_write,
  op_edged_log,
  op_edged_node_digest,
  op_edged_node_hmac,
  op_edged_response_stream,
  op_edged_timing_safe_equal,
  op_edged_wait_until,
} from "ext:core/ops";
import { core } from "ext:core/mod.js";
import { InnerBody } from "ext:deno_fetch/22_body.js";
import { fromInnerRequest, newInnerRequest, RequestPrototype } from "ext:deno_fetch/23_request.js";
import { ResponsePrototype, toInnerResponse } from "ext:deno_fetch/23_response.js";
import { ReadableStreamPrototype } from "ext:deno_web/06_streams.js";
import { URL } from "ext:deno_url/00_url.js";
import { KVNamespace } from "ext:edged/20_kv.js";
import {
  DurableObjectId,
  DurableObjectNamespace,
  DurableObjectState,
  flushWrites,
  hibernatableClosed,
  hibernatableSocket,
} from "ext:edged/30_durable.js";
import { clearTimers, rethrowFetchError, setOutputGate } from "ext:edged/00_globals.js";
import { Fetcher } from "ext:edged/50_service.js";
import { Exports, RpcTarget, STORAGE } from "ext:edged/25_rpc.js";
import { encodesManually, setSendGate, takeResponseSocket } from "ext:edged/15_websocket.js";
import {
  getReader,
  readerCancel,
  readerRead,
  releaseUnread,
  streamedInnerBody,
  takeStreamRid,
  bytesOf,
} from "ext:edged/05_body.js";
import { fetch as denoFetch } from "ext:deno_fetch/26_fetch.js";

const {
  ArrayBuffer,
  ArrayBufferPrototypeSlice,
  ArrayPrototypeFilter,
  ArrayPrototypePush,
  Error,
  ErrorPrototype,
  JSONParse,
  MapPrototypeDelete,
  MapPrototypeGet,
  MapPrototypeSet,
  Number,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectHasOwn,
  ObjectPrototype,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  PromiseReject,
  PromiseResolve,
  ReflectApply,
  SafeMap,
  String,
  StringPrototypeIndexOf,
  StringPrototypeSlice,
  StringPrototypeSplit,
  StringPrototypeStartsWith,
  StringPrototypeToLowerCase,
  Symbol,
  TypeError,
  Uint8Array,
} = primordials;

const CFW_KEY = "__edged_cloudflare_workers";

// `request.cf` of a request from a client: what the PoP knows of its
// connection (Rust hands it over as JSON, parsed on first use). Requests the
// worker makes itself have none, as in Workers.
const requestCf = Symbol("[[cf]]");
ObjectDefineProperty(RequestPrototype, "cf", {
  get() {
    const value = this[requestCf];
    if (typeof value !== "string") return value;
    const parsed = JSONParse(value);
    this[requestCf] = parsed;
    return parsed;
  },
  configurable: true,
  enumerable: true,
});

function settleWaitUntil() {
  op_edged_wait_until(true);
}

class ExecutionContext {
  #pending = 0;
  #passThrough = false;

  // `ctx.props`: what the service binding the call came through says (JSON
  // from Rust, set by the binding's owner), else an empty object.
  constructor(props = undefined) {
    this.props = typeof props === "string" ? JSONParse(props) : {};
  }

  waitUntil(promise) {
    if (!(#pending in this)) throw new TypeError("Illegal invocation");
    this.#pending++;
    // Rust counts the request's pending work; the request (and its I/O) lives
    // until it settles or the waitUntil window closes.
    op_edged_wait_until(false);
    PromisePrototypeThen(PromiseResolve(promise), settleWaitUntil, (e) => {
      op_edged_log(3, `waitUntil() promise rejected: ${errorText(e)}`);
      settleWaitUntil();
    });
  }

  passThroughOnException() {
    if (!(#pending in this)) throw new TypeError("Illegal invocation");
    this.#passThrough = true;
  }

  static hasWork(ctx) {
    return ctx.#pending > 0;
  }

  static passesThrough(ctx) {
    return ctx.#passThrough;
  }
}
const hasWork = ExecutionContext.hasWork;
const passesThrough = ExecutionContext.passesThrough;
delete ExecutionContext.hasWork;
delete ExecutionContext.passesThrough;

// `import { DurableObject, WorkerEntrypoint } from "cloudflare:workers"`
// (and RpcTarget, from 25_rpc.js)
class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}
class WorkerEntrypoint {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
  }
}

function makeEnv(bindings) {
  const env = {};
  for (let i = 0; i < bindings.length; i++) {
    const b = bindings[i];
    switch (b.type) {
      case "plain_text":
      case "secret_text":
        env[b.name] = b.text;
        break;
      case "json":
        env[b.name] = JSONParse(b.json);
        break;
      case "kv_namespace":
        env[b.name] = new KVNamespace(b.name);
        break;
      case "durable_object_namespace":
        env[b.name] = new DurableObjectNamespace(b.name);
        break;
      case "service":
        env[b.name] = new Fetcher(b.name);
        break;
      default:
        throw new TypeError(`unknown binding type '${b.type}'`);
    }
  }
  return ObjectFreeze(env);
}

let env = null;
let passThroughOrigin = null;

// `modules`: the values of the worker's Text, JSON, Data and WebAssembly
// modules (made in Rust, frozen), which their generated modules export.
// `options.node`: what the node: modules need (src/js/node.rs), only for a
// worker with Node.js compatibility. None of it can change who the code
// works for: the async-stores ops keep the running request.
export function prepare(bindings, options = {}, modules = {}) {
  passThroughOrigin = options.passThroughOrigin ?? null;
  env = makeEnv(bindings);
  const node = options.node
    ? ObjectFreeze({
      __proto__: null,
      asyncStores: op_edged_async_stores,
      setAsyncStores: op_edged_async_set_stores,
      digest: op_edged_node_digest,
      hmac: op_edged_node_hmac,
      timingSafeEqual: op_edged_timing_safe_equal,
      processEnv: options.nodeProcessEnv === true,
    })
    : undefined;
  ObjectDefineProperty(globalThis, CFW_KEY, {
    value: ObjectFreeze({ env, DurableObject, WorkerEntrypoint, RpcTarget, modules, node }),
    configurable: true,
    enumerable: false,
    writable: false,
  });
}

function flattenHeaders(list) {
  const flat = [];
  for (let i = 0; i < list.length; i++) {
    ArrayPrototypePush(flat, list[i][0], list[i][1]);
  }
  return flat;
}

function describe(value) {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "object") {
    return `an object of type ${value.constructor?.name ?? "Object"}`;
  }
  return `a value of type ${typeof value}`;
}

function errorText(e) {
  try {
    if (ObjectPrototypeIsPrototypeOf(ErrorPrototype, e)) {
      return String(e.stack ?? `${e.name}: ${e.message}`);
    }
    return `Uncaught ${String(e)}`;
  } catch {
    return "Uncaught exception";
  }
}

export function bind(ns) {
  delete globalThis[CFW_KEY];
  const exported = ns.default;
  let callFetch;
  let callScheduled;
  let callRpc = async (method) => {
    throw new TypeError(
      `The RPC receiver does not implement the method "${method}": the worker's default export is not a WorkerEntrypoint class.`,
    );
  };
  if (typeof exported === "function" && exported.prototype) {
    // `export default class extends WorkerEntrypoint { fetch(request) {...} }`
    callFetch = (request, ctx) => {
      const instance = new exported(ctx, env);
      if (typeof instance.fetch !== "function") {
        throw new TypeError("Handler does not export a fetch() function.");
      }
      return instance.fetch(request);
    };
    callScheduled = (controller, ctx) => {
      const instance = new exported(ctx, env);
      if (typeof instance.scheduled !== "function") {
        throw new TypeError("Handler does not export a scheduled() function.");
      }
      return instance.scheduled(controller);
    };
    // Service-binding RPC: a public method of a fresh instance.
    callRpc = async (method, args, ctx) => {
      const instance = new exported(ctx, env);
      if (!isCallable(instance, method)) {
        throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
      }
      return await ReflectApply(instance[method], instance, args);
    };
  } else if (exported !== null && typeof exported === "object") {
    callFetch = (request, ctx) => {
      if (typeof exported.fetch !== "function") {
        throw new TypeError("Handler does not export a fetch() function.");
      }
      return exported.fetch(request, env, ctx);
    };
    callScheduled = (controller, ctx) => {
      if (typeof exported.scheduled !== "function") {
        throw new TypeError("Handler does not export a scheduled() function.");
      }
      return exported.scheduled(controller, env, ctx);
    };
  } else {
    throw new TypeError(
      "The main module must have a default export: an object with a fetch(request, env, ctx) handler, or a class extending WorkerEntrypoint.",
    );
  }

  // A service binding with `entrypoint` calls that named export, a class
  // extending WorkerEntrypoint, as the default export would be called.
  const named = (entrypoint) => {
    const cls = ns[entrypoint];
    if (
      entrypoint === "default" ||
      typeof cls !== "function" ||
      !ObjectPrototypeIsPrototypeOf(WorkerEntrypoint.prototype, cls.prototype)
    ) {
      throw new TypeError(
        `The worker has no entrypoint named "${entrypoint}": export a class extending WorkerEntrypoint under that name.`,
      );
    }
    return cls;
  };
  const fetchVia = (request, ctx, entrypoint) => {
    if (entrypoint === undefined) return callFetch(request, ctx);
    const instance = new (named(entrypoint))(ctx, env);
    if (typeof instance.fetch !== "function") {
      throw new TypeError("Handler does not export a fetch() function.");
    }
    return instance.fetch(request);
  };
  const rpcVia = async (method, args, entrypoint, ctx) => {
    if (entrypoint === undefined) return await callRpc(method, args, ctx);
    const instance = new (named(entrypoint))(ctx, env);
    if (!isCallable(instance, method)) {
      throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
    }
    return await ReflectApply(instance[method], instance, args);
  };
  return [makeDispatch(new Exports(), fetchVia, rpcVia, null, callScheduled), clearTimers];
}

// The `controller` of a scheduled event.
class ScheduledController {
  #time;
  #cron;
  constructor(time, cron) {
    this.#time = time;
    this.#cron = cron;
  }
  get scheduledTime() {
    return this.#time;
  }
  get cron() {
    return this.#cron;
  }
  noRetry() {}
}

// Whether `method` may be called over RPC: a function that is not the
// constructor, a fetch/lifecycle handler, internal, or from Object.prototype.
function isCallable(instance, method) {
  return !(StringPrototypeStartsWith(method, "__edged") || method === "constructor" ||
    method === "fetch" || StringPrototypeStartsWith(method, "#") ||
    typeof instance[method] !== "function" || ObjectHasOwn(ObjectPrototype, method));
}

// The Durable Objects of one worker version on one isolate thread share an
// isolate (as in Workers, instances of a worker's classes may share globals).
// Returns [dispatch, clearTimers, activate, deactivate]:
// - activate(slot, className, idHex, idName) constructs `new Class(state, env)`
//   for the object in `slot` (Rust enters it with the object's context);
// - dispatch(method, url, headers, body, slot) serves one event of that
//   object: fetch, "RPC" (the public method named by the URL, `rpc:<name>`,
//   with structured-cloned arguments) or "ALARM";
// - deactivate(slot) forgets the instance (hibernation, eviction, reset).
// Storage calls name no slot: Rust takes it from the calling event's context.
export function bindObjects(ns) {
  delete globalThis[CFW_KEY];
  setOutputGate(flushWrites);
  // WebSocket sends from objects pass the output gate too.
  setSendGate(flushWrites);
  const objects = new SafeMap();
  const objectExports = new SafeMap();
  const activate = (slot, className, idHex, idName) => {
    const cls = ns[className];
    if (typeof cls !== "function") {
      throw new TypeError(
        `Durable Object class '${className}' is not exported by the worker's main module`,
      );
    }
    const state = new DurableObjectState(new DurableObjectId(idHex, idName === "" ? undefined : idName));
    const instance = new cls(state, env);
    const callFetch = (request) => {
      if (typeof instance.fetch !== "function") {
        throw new TypeError(`Durable Object class '${className}' has no fetch() method`);
      }
      return instance.fetch(request);
    };
    const callAlarm = async (retryCount) => {
      if (retryCount === null || typeof instance.alarm !== "function") {
        // Retries are exhausted (or nothing handles alarms): the alarm is gone.
        op_do_alarm_set(-1);
        return;
      }
      const fired = op_do_alarm_get();
      await instance.alarm({ retryCount, isRetry: retryCount > 0 });
      // Done, unless the handler set a new alarm.
      if (op_do_alarm_get() === fired) op_do_alarm_set(-1);
    };
    const callRpc = async (method, args) => {
      if (!isCallable(instance, method)) {
        throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
      }
      return await ReflectApply(instance[method], instance, args);
    };
    // A hibernatable socket's event: url "ws:<kind>:<id>[:<code>:<clean>]",
    // the message (or the close reason) in the body.
    const callWebSocket = async (url, body) => {
      const parts = StringPrototypeSplit(url, ":");
      const kind = parts[1];
      const hid = Number(parts[2]);
      if (kind === "close") {
        const ws = hibernatableClosed(state, hid);
        if (typeof instance.webSocketClose === "function") {
          const reason = body === null ? "" : core.decode(body);
          await instance.webSocketClose(ws, Number(parts[3]), reason, parts[4] === "1");
        }
        return;
      }
      const ws = hibernatableSocket(state, hid);
      if (typeof instance.webSocketMessage !== "function") return;
      let data;
      if (kind === "text") {
        data = body === null ? "" : core.decode(body);
      } else if (body === null) {
        data = new ArrayBuffer(0);
      } else {
        data = body.byteLength === body.buffer.byteLength
          ? body.buffer
          : ArrayBufferPrototypeSlice(body.buffer, body.byteOffset, body.byteOffset + body.byteLength);
      }
      await instance.webSocketMessage(ws, data);
    };
    // The object's RpcTargets live as long as it stays in this isolate.
    const exports = new Exports();
    MapPrototypeSet(objectExports, slot, exports);
    MapPrototypeSet(objects, slot, makeDispatch(exports, callFetch, callRpc, callAlarm, null, callWebSocket));
  };
  const dispatch = (method, url, headers, body, slot) => {
    const serve = MapPrototypeGet(objects, slot);
    if (serve === undefined) {
      return PromiseReject(new Error(`Durable Object slot ${slot} is not active in this isolate`));
    }
    return serve(method, url, headers, body);
  };
  const deactivate = (slot) => {
    MapPrototypeDelete(objects, slot);
    MapPrototypeGet(objectExports, slot)?.clear();
    MapPrototypeDelete(objectExports, slot);
  };
  return [dispatch, clearTimers, activate, deactivate];
}

// Copies a response body stream into the sink `rid` that Rust streams to the
// client, waiting whenever the client is behind. A stream that errors ends the
// response abruptly (the client sees a truncated body) and is logged.
export async function pumpBody(stream, rid) {
  // The request lives until its response is written (Rust keeps it live).
  op_edged_response_stream(false);
  try {
    await pump(stream, rid);
  } finally {
    op_edged_response_stream(true);
  }
}

async function pump(stream, rid) {
  let reader;
  try {
    reader = getReader(stream);
    while (true) {
      const { value, done } = await readerRead(reader);
      if (done) break;
      const bytes = bytesOf(value);
      if (bytes === null) throw new TypeError("This ReadableStream did not return bytes.");
      if (!(await op_edged_body_write(rid, bytes))) {
        // The client went away: stop producing.
        op_edged_body_close(rid, "client disconnected");
        PromisePrototypeThen(readerCancel(reader), undefined, () => {});
        return;
      }
    }
    op_edged_body_close(rid, "");
  } catch (e) {
    op_edged_log(3, `response body stream failed: ${errorText(e)}`);
    op_edged_body_close(rid, String(e?.message ?? e));
    if (reader !== undefined) PromisePrototypeThen(readerCancel(reader, e), undefined, () => {});
  }
}

// The runtime's own events (an RPC call, an alarm, a cron run, a hibernatable
// WebSocket's message) are told apart from HTTP requests by method *and* URL
// scheme: an HTTP request always has an http(s) URL (the data plane makes it,
// and a fetch() from JS to a non-http URL with one of these methods is refused
// in Rust), so a client sending `ALARM /` or `WEBSOCKET /` gets the fetch
// handler, never the event handler.
function makeDispatch(exports, callFetch, callRpc, callAlarm = null, callScheduled = null, callWebSocket = null) {
  return async function dispatch(method, url, flatHeaders, body, _slot, cf, entrypoint, props) {
    if (method === "WEBSOCKET" && callWebSocket !== null && StringPrototypeStartsWith(url, "ws:")) {
      try {
        await callWebSocket(url, body);
        return [200, [], null];
      } catch (e) {
        op_edged_log(3, `WebSocket event handler threw: ${errorText(e)}`);
        return ["error", "exception", errorText(e)];
      }
    }
    if (method === "SCHEDULED" && callScheduled !== null && StringPrototypeStartsWith(url, "scheduled:")) {
      // url: "scheduled:<ms since epoch>:<cron>"
      const rest = StringPrototypeSlice(url, 10);
      const sep = StringPrototypeIndexOf(rest, ":");
      const controller = new ScheduledController(
        Number(StringPrototypeSlice(rest, 0, sep)),
        StringPrototypeSlice(rest, sep + 1),
      );
      const ctx = new ExecutionContext();
      try {
        await callScheduled(controller, ctx);
        return [200, [], null];
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    if (method === "ALARM" && callAlarm !== null && StringPrototypeStartsWith(url, "alarm:")) {
      try {
        await callAlarm(url === "alarm:drop" ? null : Number(StringPrototypeSlice(url, 6)) || 0);
        return [200, [], null];
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    if (method === "RPC" && callRpc !== null && StringPrototypeStartsWith(url, "rpc:")) {
      try {
        const args = core.deserialize(body, STORAGE);
        const result = await callRpc(StringPrototypeSlice(url, 4), args, entrypoint, new ExecutionContext(props));
        return exports.answer(result);
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    // A call on (or the disposal of) an RpcTarget this worker or object
    // returned earlier (25_rpc.js).
    if (method === "RPC" && callRpc !== null && StringPrototypeStartsWith(url, "rpc-")) {
      try {
        return await exports.serve(url, body);
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    const headerList = [];
    for (let i = 0; i + 1 < flatHeaders.length; i += 2) {
      ArrayPrototypePush(headerList, [flatHeaders[i], flatHeaders[i + 1]]);
    }
    const ctx = new ExecutionContext(props);
    let innerBody = null;
    let streamedResponse = false;
    try {
      // Built from the inner request directly (as deno's HTTP server does): the
      // parts come from the HTTP layer already validated; headers are immutable
      // as in Workers. Bytes fresh from Rust are wrapped without a copy; a
      // streamed body is pulled from Rust as the worker reads it.
      if (typeof body === "number") {
        innerBody = streamedInnerBody(body);
      } else if (body !== null) {
        innerBody = new InnerBody({ body, consumed: false });
        innerBody.source = body;
        innerBody.length = body.byteLength;
      }
      const request = fromInnerRequest(
        newInnerRequest(method, url, () => headerList, innerBody, false),
        "immutable",
      );
      if (cf !== null && cf !== undefined) request[requestCf] = cf;
      let response;
      try {
        response = await callFetch(request, ctx, entrypoint);
      } catch (e) {
        if (!passesThrough(ctx) || passThroughOrigin === null) throw e;
        op_edged_log(2, `passing the request through to the origin after: ${errorText(e)}`);
        response = await passThrough(method, url, headerList, request, body);
      }
      if (!ObjectPrototypeIsPrototypeOf(ResponsePrototype, response)) {
        return [
          "error",
          "bad_response",
          `fetch handler returned ${describe(response)} instead of a Response`,
        ];
      }
      const out = responseResult(response);
      // A streamed response may still read the request body as it goes.
      streamedResponse = typeof out[2] === "number";
      return out;
    } catch (e) {
      return ["error", "exception", errorText(e)];
    } finally {
      if (!hasWork(ctx) && !streamedResponse && innerBody !== null && typeof body === "number") {
        releaseUnread(innerBody.streamOrStatic);
      }
    }
  };
}

// The request, sent on to the configured origin unchanged (same method, path,
// query, headers and, when the worker did not consume it, body).
async function passThrough(method, url, headerList, request, body) {
  const target = new URL(url);
  const origin = new URL(passThroughOrigin);
  target.protocol = origin.protocol;
  target.host = origin.host;
  const init = {
    method,
    headers: ArrayPrototypeFilter(headerList, (h) => StringPrototypeToLowerCase(h[0]) !== "host"),
    redirect: "manual",
  };
  if (method !== "GET" && method !== "HEAD") {
    if (!request.bodyUsed && request.body !== null) init.body = request.body;
    else if (ObjectPrototypeIsPrototypeOf(Uint8Array.prototype, body)) init.body = body;
  }
  try {
    return await denoFetch(target.href, init);
  } catch (e) {
    rethrowFetchError(e);
  }
}

function responseResult(response) {
  const result = responseParts(response);
  // The sixth element: the body is already encoded (`encodeBody: "manual"`).
  if (encodesManually(response)) {
    while (result.length < 5) ArrayPrototypePush(result, null);
    ArrayPrototypePush(result, true);
  }
  return result;
}

function responseParts(response) {
  const inner = toInnerResponse(response);
  const headers = flattenHeaders(inner.headerList);
  // A 101 with a WebSocket: the socket's end leaves the isolate with it.
  const socket = takeResponseSocket(response);
  if (socket !== null) return [101, headers, null, null, socket];
  if (inner.body === null) return [inner.status, headers, null];
  const stored = inner.body.streamOrStatic;
  if (!ObjectPrototypeIsPrototypeOf(ReadableStreamPrototype, stored) && !stored.consumed) {
    // A string or bytes body: hand it over as is (Rust encodes strings as UTF-8).
    return [inner.status, headers, stored.body];
  }
  if (inner.body.unusable()) {
    throw new TypeError("The Response body has already been used.");
  }
  // An untouched body from Rust (e.g. `new Response(request.body)`) goes back
  // to Rust as it is: no chunk passes through JS.
  const source = takeStreamRid(inner.body.stream);
  if (source !== null) return [inner.status, headers, source, "source"];
  const rid = op_edged_body_open();
  pumpBody(inner.body.stream, rid);
  return [inner.status, headers, rid];
}

// Runs the request path a few times so that its functions are compiled. Called
// once while the startup snapshot is made (the snapshot keeps compiled code), so
// a cold start does not pay for compiling the runtime's own JavaScript.
export async function warmup() {
  prepare([{ type: "plain_text", name: "W", text: "w" }]);
  const [dispatch] = bind({
    default: {
      async fetch(request, env, ctx) {
        const url = new URL(request.url);
        const text = request.body === null ? "" : await request.text();
        ctx.waitUntil(PromiseResolve());
        request.headers.get("accept");
        if (url.pathname === "/json") return Response.json({ text, q: url.searchParams.get("q") });
        return new Response(`${url.pathname}${text}`, { headers: { "content-type": "text/plain" } });
      },
    },
  });
  const headers = ["accept", "*/*", "content-type", "text/plain", "user-agent", "warmup"];
  for (let i = 0; i < 20; i++) {
    await dispatch("GET", "http://warm.up/json?q=1", headers, null);
    await dispatch("POST", "http://warm.up/post", headers, new Uint8Array([104, 105]));
    await dispatch("GET", "http://warm.up/", [], null);
  }
  new Headers({ a: "b" }).getSetCookie();
  new TextDecoder().decode(new TextEncoder().encode("warm"));
  env = null;
}
