// conformance case: timers/clear_timeout
// @spec https://html.spec.whatwg.org/multipage/timers-and-user-prompts.html
// @request GET /
// @status 200
// @body false

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    let fired = false;
    const t = setTimeout(() => { fired = true; }, 10);
    clearTimeout(t);
    await new Promise((r) => setTimeout(r, 30));
    return fired;
    })();
    return new Response(String(result));
  },
};
