// conformance case: url/searchparams_delete_has
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body false,b=2

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const p = new URLSearchParams("a=1&b=2");
    p.delete("a");
    return p.has("a") + "," + p.toString();
    })();
    return new Response(String(result));
  },
};
