// conformance case: headers/append_combines
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 1, 2

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const h = new Headers();
    h.append("x-a", "1");
    h.append("x-a", "2");
    return h.get("x-a");
    })();
    return new Response(String(result));
  },
};
