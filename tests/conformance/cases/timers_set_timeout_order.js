// conformance case: timers/set_timeout_order
// @spec https://html.spec.whatwg.org/multipage/timers-and-user-prompts.html
// @request GET /
// @status 200
// @body a,b

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const out = [];
    await new Promise((r) => { setTimeout(() => { out.push("b"); r(); }, 20); setTimeout(() => out.push("a"), 5); });
    return out.join();
    })();
    return new Response(String(result));
  },
};
