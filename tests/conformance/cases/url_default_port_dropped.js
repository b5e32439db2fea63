// conformance case: url/default_port_dropped
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body https://a.com/

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("https://a.com:443/").href));
  },
};
