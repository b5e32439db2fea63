// conformance case: url/pathname_percent_encoding
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body /a%20b/%C3%BC

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("http://x/a b/\u00fc").pathname));
  },
};
