// conformance case: streams/second_reader_throws
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream();
    s.getReader();
    try { s.getReader(); return "two readers"; } catch (e) { return e.name; }
    })();
    return new Response(String(result));
  },
};
