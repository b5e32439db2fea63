// edged runtime: service bindings -- `env.NAME.fetch()` and JS RPC to another
// worker on the same node (op_service_*, src/js/service.rs). The call depth and
// the subrequest count are kept in Rust, from the calling request's context.

import { core, primordials } from "ext:core/mod.js";
import { op_service_fetch, op_service_rpc } from "ext:core/ops";
import { beforeOutgoing, fromRemote } from "ext:edged/00_globals.js";
import { readableFromRid } from "ext:edged/05_body.js";
import { Request } from "ext:deno_fetch/23_request.js";
import { Response } from "ext:deno_fetch/23_response.js";
import { socketResponse } from "ext:edged/15_websocket.js";
import { decodeAnswer, encodeArgs } from "ext:edged/25_rpc.js";

const {
  ArrayPrototypePush,
  FunctionPrototypeBind,
  Proxy,
  ReflectGet,
  String,
  Uint8Array,
} = primordials;

function nullBody(status) {
  return status === 101 || status === 204 || status === 205 || status === 304;
}

export class Fetcher {
  #binding;
  constructor(binding) {
    this.#binding = binding;
    // Any other property is an RPC method of the target's WorkerEntrypoint.
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop === "symbol" || prop in target) {
          const value = ReflectGet(target, prop, receiver);
          // Methods run on the binding itself (private fields), not the proxy.
          return typeof value === "function" ? FunctionPrototypeBind(value, target) : value;
        }
        // Not thenable: `await env.SERVICE` yields the binding itself.
        if (prop === "then") return undefined;
        return (...args) => target.#rpc(prop, args);
      },
    });
  }

  async fetch(input, init = undefined) {
    const request = new Request(input, init);
    const headers = [];
    for (const [name, value] of request.headers) ArrayPrototypePush(headers, name, value);
    const body = request.body === null ? null : new Uint8Array(await request.arrayBuffer());
    await beforeOutgoing();
    let result;
    try {
      result = await op_service_fetch(this.#binding, request.method, request.url, headers, body);
    } catch (e) {
      throw fromRemote(e);
    }
    const status = result[0];
    const flat = result[1];
    const rid = result[3];
    const pairs = [];
    for (let i = 0; i + 1 < flat.length; i += 2) ArrayPrototypePush(pairs, [flat[i], flat[i + 1]]);
    if (result[4] !== null) return socketResponse(pairs, result[4]);
    let responseBody = rid !== null ? readableFromRid(rid) : result[2];
    if (nullBody(status) || request.method === "HEAD") {
      if (rid !== null) core.tryClose(rid);
      responseBody = null;
    }
    return new Response(responseBody, { status, headers: pairs });
  }

  async #rpc(method, args) {
    const bytes = encodeArgs(args);
    await beforeOutgoing();
    let out;
    try {
      out = await op_service_rpc(this.#binding, String(method), bytes);
    } catch (e) {
      throw fromRemote(e);
    }
    return decodeAnswer(out);
  }
}
