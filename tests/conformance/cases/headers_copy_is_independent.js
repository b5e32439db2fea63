// conformance case: headers/copy_is_independent
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 1

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const a = new Headers({ x: "1" });
    const b = new Headers(a);
    a.set("x", "2");
    return b.get("x");
    })();
    return new Response(String(result));
  },
};
