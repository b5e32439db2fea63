// conformance case: fetch/get_origin
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 200|hello from origin

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/hello");
    return r.status + "|" + (await r.text());
    })();
    return new Response(String(result));
  },
};
