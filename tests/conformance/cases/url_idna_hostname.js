// conformance case: url/idna_hostname
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body xn--mnchen-3ya.de

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("http://m\u00fcnchen.de/").hostname));
  },
};
