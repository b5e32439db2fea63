// conformance case: headers/delete_then_has
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body false

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const h = new Headers({ a: "1" });
    h.delete("A");
    return h.has("a");
    })();
    return new Response(String(result));
  },
};
