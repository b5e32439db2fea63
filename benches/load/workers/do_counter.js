// Scenarios "do-counter" (one object) and "do-fanout" (?objects=100): a durable
// counter per object, incremented on every request.
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  async fetch() {
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    this.ctx.storage.put("v", v);
    return new Response(String(v));
  }
}

let next = 0;
export default {
  async fetch(request, env) {
    const objects = Number(new URL(request.url).searchParams.get("objects") ?? 1);
    const name = `counter-${next++ % objects}`;
    return env.COUNTER.get(env.COUNTER.idFromName(name)).fetch(request);
  },
};
