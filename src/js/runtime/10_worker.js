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
import { headerListFromHeaders } from "ext:deno_fetch/20_headers.js";
import { currentRequestId } from "ext:edged/00_globals.js";

const CFW_KEY = "__edged_cloudflare_workers";

class ExecutionContext {
  #waitUntil = [];
  waitUntil(promise) {
    const p = Promise.resolve(promise).catch((e) => {
      globalThis.console.error("waitUntil promise rejected:", e);
    });
    this.#waitUntil.push(p);
  }
  passThroughOnException() {
    // Without an origin behind the worker there is nothing to pass through to; an
    // exception still ends in the generic 500.
  }
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

function unavailableBinding(kind, name, issue) {
  const fail = () => {
    throw new Error(
      `${kind} binding '${name}' is not available on this node yet (${issue})`,
    );
  };
  return new Proxy({}, {
    get(_target, prop) {
      if (prop === "then" || typeof prop === "symbol") return undefined;
      return fail;
    },
  });
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
        env[b.name] = unavailableBinding("KV namespace", b.name, "Workers KV");
        break;
      case "durable_object_namespace":
        env[b.name] = unavailableBinding(
          "Durable Object namespace",
          b.name,
          "Durable Objects",
        );
        break;
      default:
        throw new TypeError(`unknown binding type '${b.type}'`);
    }
  }
  return Object.freeze(env);
}

let env = null;

export function prepare(bindings) {
  env = makeEnv(bindings);
  Object.defineProperty(globalThis, CFW_KEY, {
    value: Object.freeze({ env, DurableObject, WorkerEntrypoint }),
    configurable: true,
    enumerable: false,
    writable: false,
  });
}

function flattenHeaders(headers) {
  const list = headerListFromHeaders(headers);
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
  if (typeof exported === "function" && exported.prototype) {
    // `export default class extends WorkerEntrypoint { fetch(request) {...} }`
    callFetch = (request, ctx) => {
      const instance = new exported(ctx, env);
      if (typeof instance.fetch !== "function") {
        throw new TypeError("Handler does not export a fetch() function.");
      }
      return instance.fetch(request);
    };
  } else if (exported !== null && typeof exported === "object") {
    callFetch = (request, ctx) => {
      if (typeof exported.fetch !== "function") {
        throw new TypeError("Handler does not export a fetch() function.");
      }
      return exported.fetch(request, env, ctx);
    };
  } else {
    throw new TypeError(
      "The main module must have a default export: an object with a fetch(request, env, ctx) handler, or a class extending WorkerEntrypoint.",
    );
  }

  return async function dispatch(id, method, url, flatHeaders, body) {
    try {
      const headers = [];
      for (let i = 0; i + 1 < flatHeaders.length; i += 2) {
        headers.push([flatHeaders[i], flatHeaders[i + 1]]);
      }
      const init = { method, headers };
      if (body !== null) init.body = body;
      const request = new Request(url, init);
      const ctx = new ExecutionContext();
      const previous = core.getAsyncContext();
      core.setAsyncContext(id);
      let pending;
      try {
        pending = callFetch(request, ctx);
      } finally {
        core.setAsyncContext(previous);
      }
      const response = await pending;
      if (!(response instanceof Response)) {
        return [
          "error",
          "bad_response",
          `fetch handler returned ${describe(response)} instead of a Response`,
        ];
      }
      const out = response.body === null
        ? null
        : new Uint8Array(await response.arrayBuffer());
      return [response.status, flattenHeaders(response.headers), out];
    } catch (e) {
      return ["error", "exception", errorText(e)];
    }
  };
}

export { currentRequestId };
