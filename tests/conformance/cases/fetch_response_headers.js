// conformance case: fetch/response_headers
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body yes|text/plain

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/echo");
    return r.headers.get("x-origin") + "|" + r.headers.get("content-type");
    })();
    return new Response(String(result));
  },
};
