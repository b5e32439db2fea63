// conformance case: fetch/response_stream_read
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 17

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/hello");
    let n = 0;
    for await (const chunk of r.body) n += chunk.byteLength;
    return n;
    })();
    return new Response(String(result));
  },
};
