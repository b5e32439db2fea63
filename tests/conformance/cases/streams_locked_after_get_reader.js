// conformance case: streams/locked_after_get_reader
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream();
    s.getReader();
    return s.locked;
    })();
    return new Response(String(result));
  },
};
