// conformance case: timers/set_interval
// @spec https://html.spec.whatwg.org/multipage/timers-and-user-prompts.html
// @request GET /
// @status 200
// @body 3

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    let n = 0;
    await new Promise((r) => { const id = setInterval(() => { if (++n === 3) { clearInterval(id); r(); } }, 2); });
    return n;
    })();
    return new Response(String(result));
  },
};
