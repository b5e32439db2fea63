// conformance case: timers/microtask_order
// @spec https://html.spec.whatwg.org/multipage/timers-and-user-prompts.html
// @request GET /
// @status 200
// @body sync,micro,promise,timeout

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const out = [];
    setTimeout(() => out.push("timeout"), 0);
    queueMicrotask(() => out.push("micro"));
    Promise.resolve().then(() => out.push("promise"));
    out.push("sync");
    await new Promise((r) => setTimeout(r, 10));
    return out.join();
    })();
    return new Response(String(result));
  },
};
