// edged runtime: binding a tenant's module to the isolate and dispatching events.
//
// Rust drives this in two steps per isolate (src/js/worker.rs):
//   1. prepare(bindings, workerName): builds `env` and the `cloudflare:workers`
//      exports the tenant's modules may import;
//   2. bind(namespace): checks the main module's default export and returns the
//      dispatch function that Rust calls once per request.
// dispatch() never rejects: it resolves to [status, flatHeaders, body] or to
// ["error", kind, message] so that Rust can tell a tenant bug from a response.

import { core } from "ext:core/mod.js";
import {
  op_do_alarm_get,
  op_do_alarm_set,
  op_edged_body_close,
  op_edged_body_open,
  op_edged_body_write,
  op_edged_log,
} from "ext:core/ops";
import { InnerBody } from "ext:deno_fetch/22_body.js";
import { fromInnerRequest, newInnerRequest } from "ext:deno_fetch/23_request.js";
import { toInnerResponse } from "ext:deno_fetch/23_response.js";
import { ReadableStream } from "ext:deno_web/06_streams.js";
import { KVNamespace } from "ext:edged/20_kv.js";
import {
  DurableObjectId,
  DurableObjectNamespace,
  DurableObjectState,
  flushWrites,
} from "ext:edged/30_durable.js";
import {
  configureFetch,
  currentRequestId,
  expireRequest,
  cancelObjectTimers,
  rethrowFetchError,
  setOutputGate,
  setRequestDepth,
  setRequestSlot,
  trackObjectTimers,
} from "ext:edged/00_globals.js";
import { Fetcher } from "ext:edged/50_service.js";
import { releaseUnread, streamedInnerBody, takeStreamRid } from "ext:edged/05_body.js";
import { fetch as denoFetch } from "ext:deno_fetch/26_fetch.js";

const CFW_KEY = "__edged_cloudflare_workers";

// What ctx.waitUntil() and ctx.passThroughOnException() recorded for a request.
const contextState = new WeakMap();

class ExecutionContext {
  constructor(requestId) {
    contextState.set(this, { requestId, tasks: [], passThrough: false });
  }
  waitUntil(promise) {
    const state = contextState.get(this);
    if (state === undefined) throw new TypeError("Illegal invocation");
    state.tasks.push(
      Promise.resolve(promise).catch((e) => {
        op_edged_log(3, state.requestId, `waitUntil() promise rejected: ${errorText(e)}`);
      }),
    );
  }
  passThroughOnException() {
    const state = contextState.get(this);
    if (state === undefined) throw new TypeError("Illegal invocation");
    state.passThrough = true;
  }
}

// Lets the request's waitUntil() work run on after the response, for at most
// `waitUntilMs`; past it the request's remaining I/O fails (see assertLive).
// Returns whether there is waitUntil() work.
function watchWaitUntil(ctx) {
  const state = contextState.get(ctx);
  if (state.tasks.length === 0) return false;
  let finished = false;
  const timer = setTimeout(() => {
    if (finished) return;
    expireRequest(state.requestId);
    op_edged_log(
      2,
      state.requestId,
      `ctx.waitUntil() work did not finish within ${waitUntilMs} ms of the response; its remaining I/O is cancelled`,
    );
  }, waitUntilMs);
  (async () => {
    let seen = 0;
    // waitUntil() may be called again from inside waitUntil() work.
    while (seen < state.tasks.length) {
      const batch = state.tasks.slice(seen);
      seen = state.tasks.length;
      await Promise.all(batch);
    }
    finished = true;
    clearTimeout(timer);
  })();
  return true;
}

// `import { DurableObject, WorkerEntrypoint } from "cloudflare:workers"`
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
  for (const b of bindings) {
    switch (b.type) {
      case "plain_text":
      case "secret_text":
        env[b.name] = b.text;
        break;
      case "json":
        env[b.name] = JSON.parse(b.json);
        break;
      case "kv_namespace":
        env[b.name] = new KVNamespace(b.namespace);
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
  return Object.freeze(env);
}

let env = null;
let waitUntilMs = 30000;
let passThroughOrigin = null;

export function prepare(bindings, options = {}) {
  configureFetch(options.subrequests ?? 50);
  waitUntilMs = options.waitUntilMs ?? 30000;
  passThroughOrigin = options.passThroughOrigin ?? null;
  env = makeEnv(bindings);
  Object.defineProperty(globalThis, CFW_KEY, {
    value: Object.freeze({ env, DurableObject, WorkerEntrypoint }),
    configurable: true,
    enumerable: false,
    writable: false,
  });
}

function flattenHeaders(list) {
  const flat = [];
  for (let i = 0; i < list.length; i++) {
    flat.push(list[i][0], list[i][1]);
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
  if (e instanceof Error) return e.stack ?? `${e.name}: ${e.message}`;
  try {
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
    callRpc = async (method, args, id) => {
      const instance = new exported(new ExecutionContext(id), env);
      if (!isCallable(instance, method)) {
        throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
      }
      return await instance[method](...args);
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

  return makeDispatch(callFetch, callRpc, null, true, callScheduled);
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
  return !(method.startsWith("__edged") || method === "constructor" || method === "fetch" ||
    method.startsWith("#") || typeof instance[method] !== "function" ||
    Object.hasOwn(Object.prototype, method));
}

// The Durable Objects of one worker version on one isolate thread share an
// isolate (as in Workers, instances of a worker's classes may share globals).
// Returns [dispatch, activate, deactivate]:
// - activate(slot, className, idHex, idName) constructs `new Class(state, env)`
//   for the object in `slot`;
// - dispatch(id, method, url, headers, body, depth, slot) serves one event of
//   that object: fetch, "RPC" (the public method named by the URL, `rpc:<name>`,
//   with structured-cloned arguments) or "ALARM";
// - deactivate(slot) forgets the instance (hibernation, eviction, reset).
export function bindObjects(ns) {
  delete globalThis[CFW_KEY];
  setOutputGate(flushWrites);
  trackObjectTimers();
  const objects = new Map();
  // `requestId`: a fresh id the constructor runs under (timers it starts belong
  // to the object).
  const activate = (slot, className, idHex, idName, requestId) => {
    const cls = ns[className];
    if (typeof cls !== "function") {
      throw new TypeError(
        `Durable Object class '${className}' is not exported by the worker's main module`,
      );
    }
    const state = new DurableObjectState(new DurableObjectId(idHex, idName === "" ? undefined : idName), slot);
    setRequestSlot(requestId, slot);
    const instance = runAs(requestId, () => new cls(state, env));
    const callFetch = (request) => {
      if (typeof instance.fetch !== "function") {
        throw new TypeError(`Durable Object class '${className}' has no fetch() method`);
      }
      return instance.fetch(request);
    };
    const callAlarm = async (retryCount) => {
      if (retryCount === null || typeof instance.alarm !== "function") {
        // Retries are exhausted (or nothing handles alarms): the alarm is gone.
        op_do_alarm_set(slot, -1);
        return;
      }
      const fired = op_do_alarm_get(slot);
      await instance.alarm({ retryCount, isRetry: retryCount > 0 });
      // Done, unless the handler set a new alarm.
      if (op_do_alarm_get(slot) === fired) op_do_alarm_set(slot, -1);
    };
    const callRpc = async (method, args) => {
      if (!isCallable(instance, method)) {
        throw new TypeError(`The RPC receiver does not implement the method "${method}".`);
      }
      return await instance[method](...args);
    };
    objects.set(slot, makeDispatch(callFetch, callRpc, callAlarm, true));
  };
  const dispatch = (id, method, url, headers, body, depth, slot) => {
    const serve = objects.get(slot);
    if (serve === undefined) {
      return Promise.reject(new Error(`Durable Object slot ${slot} is not active in this isolate`));
    }
    setRequestSlot(id, slot);
    return serve(id, method, url, headers, body, depth);
  };
  const deactivate = (slot) => {
    objects.delete(slot);
    cancelObjectTimers(slot);
  };
  return [dispatch, activate, deactivate];
}

function asBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) {
    return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  throw new TypeError("This ReadableStream did not return bytes.");
}

// Copies a response body stream into the sink `rid` that Rust streams to the
// client, waiting whenever the client is behind. A stream that errors ends the
// response abruptly (the client sees a truncated body) and is logged.
export async function pumpBody(requestId, stream, rid) {
  let reader;
  try {
    reader = stream.getReader();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      if (!(await op_edged_body_write(rid, asBytes(value)))) {
        // The client went away: stop producing.
        op_edged_body_close(rid, "client disconnected");
        reader.cancel().catch(() => {});
        return;
      }
    }
    op_edged_body_close(rid, "");
  } catch (e) {
    op_edged_log(3, requestId, `response body stream failed: ${errorText(e)}`);
    op_edged_body_close(rid, String(e?.message ?? e));
    reader?.cancel(e).catch(() => {});
  }
}

// Calls a handler with request `id` as the async context, so everything it
// starts (promises, timers, ops) knows which request it belongs to.
function runAs(id, call) {
  const previous = core.getAsyncContext();
  core.setAsyncContext(id);
  try {
    return call();
  } finally {
    core.setAsyncContext(previous);
  }
}

function makeDispatch(callFetch, callRpc, callAlarm = null, streaming = false, callScheduled = null) {
  return async function dispatch(id, method, url, flatHeaders, body, depth = 0) {
    setRequestDepth(id, depth);
    if (method === "SCHEDULED" && callScheduled !== null) {
      // url: "scheduled:<ms since epoch>:<cron>"
      const rest = url.slice("scheduled:".length);
      const sep = rest.indexOf(":");
      const controller = new ScheduledController(Number(rest.slice(0, sep)), rest.slice(sep + 1));
      const ctx = new ExecutionContext(id);
      let pending;
      try {
        pending = runAs(id, () => callScheduled(controller, ctx));
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
      try {
        await pending;
        return [200, [], null];
      } catch (e) {
        return ["error", "exception", errorText(e)];
      } finally {
        watchWaitUntil(ctx);
      }
    }
    if (method === "ALARM" && callAlarm !== null) {
      try {
        await runAs(id, () => callAlarm(url === "alarm:drop" ? null : Number(url.slice("alarm:".length)) || 0));
        return [200, [], null];
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    if (method === "RPC" && callRpc !== null) {
      try {
        const args = core.deserialize(body, { forStorage: true });
        const result = await runAs(id, () => callRpc(url.slice(4), args, id));
        return [200, [], core.serialize(result, { forStorage: true })];
      } catch (e) {
        return ["error", "exception", errorText(e)];
      }
    }
    const headerList = [];
    for (let i = 0; i + 1 < flatHeaders.length; i += 2) {
      headerList.push([flatHeaders[i], flatHeaders[i + 1]]);
    }
    const ctx = new ExecutionContext(id);
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
      const pending = runAs(id, () => callFetch(request, ctx));
      let response;
      try {
        response = await pending;
      } catch (e) {
        if (!contextState.get(ctx).passThrough || passThroughOrigin === null) throw e;
        op_edged_log(2, id, `passing the request through to the origin after: ${errorText(e)}`);
        response = await passThrough(method, url, headerList, request, body);
      }
      if (!(response instanceof Response)) {
        return [
          "error",
          "bad_response",
          `fetch handler returned ${describe(response)} instead of a Response`,
        ];
      }
      const out = await responseResult(id, response, streaming);
      // A streamed response may still read the request body as it goes.
      streamedResponse = typeof out[2] === "number";
      return out;
    } catch (e) {
      return ["error", "exception", errorText(e)];
    } finally {
      const waiting = watchWaitUntil(ctx);
      if (!waiting && !streamedResponse && innerBody !== null && typeof body === "number") {
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
    headers: headerList.filter(([name]) => name.toLowerCase() !== "host"),
    redirect: "manual",
  };
  if (method !== "GET" && method !== "HEAD") {
    if (!request.bodyUsed && request.body !== null) init.body = request.body;
    else if (body instanceof Uint8Array) init.body = body;
  }
  try {
    return await denoFetch(target.href, init);
  } catch (e) {
    rethrowFetchError(e);
  }
}

async function responseResult(id, response, streaming) {
  const inner = toInnerResponse(response);
  const headers = flattenHeaders(inner.headerList);
  if (inner.body === null) return [inner.status, headers, null];
  const stored = inner.body.streamOrStatic;
  if (!(stored instanceof ReadableStream) && !stored.consumed) {
    // A string or bytes body: hand it over as is (Rust encodes strings as UTF-8).
    return [inner.status, headers, stored.body];
  }
  if (response.bodyUsed) {
    throw new TypeError("The Response body has already been used.");
  }
  if (streaming) {
    // An untouched body from Rust (e.g. `new Response(request.body)`) goes back
    // to Rust as it is: no chunk passes through JS.
    const source = takeStreamRid(inner.body.stream);
    if (source !== null) return [inner.status, headers, source, "source"];
    const rid = op_edged_body_open();
    pumpBody(id, inner.body.stream, rid);
    return [inner.status, headers, rid];
  }
  return [inner.status, headers, new Uint8Array(await response.arrayBuffer())];
}

// Runs the request path a few times so that its functions are compiled. Called
// once while the startup snapshot is made (the snapshot keeps compiled code), so
// a cold start does not pay for compiling the runtime's own JavaScript.

export async function warmup() {
  prepare([{ type: "plain_text", name: "W", text: "w" }]);
  const dispatch = bind({
    default: {
      async fetch(request, env, ctx) {
        const url = new URL(request.url);
        const text = request.body === null ? "" : await request.text();
        ctx.waitUntil(Promise.resolve());
        request.headers.get("accept");
        if (url.pathname === "/json") return Response.json({ text, q: url.searchParams.get("q") });
        return new Response(`${url.pathname}${text}`, { headers: { "content-type": "text/plain" } });
      },
    },
  });
  const headers = ["accept", "*/*", "content-type", "text/plain", "user-agent", "warmup"];
  for (let i = 0; i < 20; i++) {
    await dispatch(0, "GET", "http://warm.up/json?q=1", headers, null);
    await dispatch(0, "POST", "http://warm.up/post", headers, new Uint8Array([104, 105]));
    await dispatch(0, "GET", "http://warm.up/", [], null);
  }
  new Headers({ a: "b" }).getSetCookie();
  new TextDecoder().decode(new TextEncoder().encode("warm"));
  env = null;
}

export { currentRequestId };
