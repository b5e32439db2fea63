// conformance case: url/ipv6_host
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body [::1]:8080

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("http://[::1]:8080/").host));
  },
};
