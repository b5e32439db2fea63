// conformance case: crypto/get_random_values
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body 16

export default {
  async fetch(request, env, ctx) {
    return new Response(String(crypto.getRandomValues(new Uint8Array(16)).length));
  },
};
