// edged runtime: service bindings -- `env.NAME.fetch()` and JS RPC to another
// worker on the same node (op_service_*, src/js/service.rs).

import { core } from "ext:core/mod.js";
import { op_service_fetch, op_service_rpc } from "ext:core/ops";
import { assertLive, beforeOutgoing, currentDepth, fromRemote } from "ext:edged/00_globals.js";
import { readableFromRid } from "ext:edged/05_body.js";

const NULL_BODY = new Set([101, 204, 205, 304]);

export class Fetcher {
  #binding;
  constructor(binding) {
    this.#binding = binding;
    // Any other property is an RPC method of the target's WorkerEntrypoint.
    return new Proxy(this, {
      get(target, prop, receiver) {
        if (typeof prop === "symbol" || prop in target) {
          const value = Reflect.get(target, prop, receiver);
          // Methods run on the binding itself (private fields), not the proxy.
          return typeof value === "function" ? value.bind(target) : value;
        }
        // Not thenable: `await env.SERVICE` yields the binding itself.
        if (prop === "then") return undefined;
        return (...args) => target.#rpc(prop, args);
      },
    });
  }

  async fetch(input, init = undefined) {
    assertLive("service binding fetch()");
    const request = new Request(input, init);
    const headers = [];
    for (const [name, value] of request.headers) headers.push(name, value);
    const body = request.body === null ? null : new Uint8Array(await request.arrayBuffer());
    await beforeOutgoing();
    let result;
    try {
      result = await op_service_fetch(
        this.#binding,
        request.method,
        request.url,
        headers,
        body,
        currentDepth() + 1,
      );
    } catch (e) {
      throw fromRemote(e);
    }
    const [status, flat, bytes, rid] = result;
    const pairs = [];
    for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i], flat[i + 1]]);
    let responseBody = rid !== null ? readableFromRid(rid) : bytes;
    if (NULL_BODY.has(status) || request.method === "HEAD") {
      if (rid !== null) core.tryClose(rid);
      responseBody = null;
    }
    return new Response(responseBody, { status, headers: pairs });
  }

  async #rpc(method, args) {
    assertLive("service binding RPC");
    await beforeOutgoing();
    let out;
    try {
      out = await op_service_rpc(
        this.#binding,
        String(method),
        core.serialize(args, { forStorage: true }),
        currentDepth() + 1,
      );
    } catch (e) {
      throw fromRemote(e);
    }
    return core.deserialize(out, { forStorage: true });
  }
}
