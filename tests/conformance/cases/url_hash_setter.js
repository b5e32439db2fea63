// conformance case: url/hash_setter
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body http://x/#frag

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const u = new URL("http://x/");
    u.hash = "frag";
    return u.href;
    })();
    return new Response(String(result));
  },
};
