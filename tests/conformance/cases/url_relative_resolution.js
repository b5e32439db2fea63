// conformance case: url/relative_resolution
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body http://a.com/b/c?x

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("../c?x", "http://a.com/b/d/e").href));
  },
};
