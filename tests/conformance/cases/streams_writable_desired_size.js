// conformance case: streams/writable_desired_size
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body 2

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const w = new WritableStream({}, { highWaterMark: 2 });
    return w.getWriter().desiredSize;
    })();
    return new Response(String(result));
  },
};
