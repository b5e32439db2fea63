// conformance case: crypto/get_random_values_quota
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body QuotaExceededError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      crypto.getRandomValues(new Uint8Array(65537));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
