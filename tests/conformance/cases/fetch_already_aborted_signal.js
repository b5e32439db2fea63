// conformance case: fetch/already_aborted_signal
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body AbortError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const c = new AbortController();
    c.abort();
    try { await fetch(origin + "/hello", { signal: c.signal }); return "fetched"; } catch (e) { return e.name; }
    })();
    return new Response(String(result));
  },
};
