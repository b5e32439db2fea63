// conformance case: url/protocol_setter_special
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body https://x/

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const u = new URL("http://x/");
    u.protocol = "https";
    return u.href;
    })();
    return new Response(String(result));
  },
};
