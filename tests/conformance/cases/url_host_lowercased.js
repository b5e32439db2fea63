// conformance case: url/host_lowercased
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body http://example.com/A

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("HTTP://EXAMPLE.COM/A").href));
  },
};
