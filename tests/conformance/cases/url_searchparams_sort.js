// conformance case: url/searchparams_sort
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body a=2&m=3&z=1

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const p = new URLSearchParams("z=1&a=2&m=3");
    p.sort();
    return p.toString();
    })();
    return new Response(String(result));
  },
};
