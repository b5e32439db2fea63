// conformance case: timers/abort_event_fires
// @spec https://dom.spec.whatwg.org/#interface-AbortSignal
// @request GET /
// @status 200
// @body abort|r

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const c = new AbortController();
    let seen = "";
    c.signal.addEventListener("abort", (e) => { seen = e.type; });
    c.abort("r");
    return seen + "|" + c.signal.reason;
    })();
    return new Response(String(result));
  },
};
