// conformance case: url/searchparams_update_href
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body http://x/?a=1&b=2+3

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const u = new URL("http://x/?a=1");
    u.searchParams.append("b", "2 3");
    return u.href;
    })();
    return new Response(String(result));
  },
};
