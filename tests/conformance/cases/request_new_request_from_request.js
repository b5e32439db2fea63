// conformance case: request/new_request_from_request
// @spec https://fetch.spec.whatwg.org/
// @request GET /copy
// @status 200
// @body GET|1|/copy

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Request(request, { headers: { "x-new": "1" } });
    return r.method + "|" + r.headers.get("x-new") + "|" + new URL(r.url).pathname;
    })();
    return new Response(String(result));
  },
};
