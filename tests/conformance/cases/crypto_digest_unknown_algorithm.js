// conformance case: crypto/digest_unknown_algorithm
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body NotSupportedError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      await crypto.subtle.digest("SHA-999", new Uint8Array(1));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
