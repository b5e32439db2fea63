// conformance case: streams/writer_close_then_write_throws
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const w = new WritableStream().getWriter();
    await w.close();
    try { await w.write("x"); return "wrote"; } catch (e) { return e.name; }
    })();
    return new Response(String(result));
  },
};
