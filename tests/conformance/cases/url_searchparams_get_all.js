// conformance case: url/searchparams_get_all
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body 1,3|2|null

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const p = new URLSearchParams("a=1&b=2&a=3");
    return p.getAll("a").join(",") + "|" + p.get("b") + "|" + p.get("c");
    })();
    return new Response(String(result));
  },
};
