// conformance case: crypto/hmac_wrong_usage
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body InvalidAccessError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      await crypto.subtle.sign("HMAC", await crypto.subtle.importKey("raw", new Uint8Array(4), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]), new Uint8Array(1));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
