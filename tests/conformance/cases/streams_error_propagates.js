// conformance case: streams/error_propagates
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body bad

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream({ start(c) { c.error(new Error("bad")); } });
    try { await s.getReader().read(); return "no error"; } catch (e) { return e.message; }
    })();
    return new Response(String(result));
  },
};
