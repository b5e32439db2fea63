// conformance case: url/searchparams_iterate
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body a1,b2

export default {
  async fetch(request, env, ctx) {
    return new Response(String([...new URLSearchParams("a=1&b=2")].map(([k, v]) => k + v).join()));
  },
};
