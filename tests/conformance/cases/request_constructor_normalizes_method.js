// conformance case: request/constructor_normalizes_method
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body PUT|b|http://x/a

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Request("http://x/a", { method: "put", headers: { a: "b" } });
    return r.method + "|" + r.headers.get("a") + "|" + r.url;
    })();
    return new Response(String(result));
  },
};
