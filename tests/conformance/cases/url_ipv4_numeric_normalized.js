// conformance case: url/ipv4_numeric_normalized
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body 127.0.0.1

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("http://0x7f.1/").hostname));
  },
};
