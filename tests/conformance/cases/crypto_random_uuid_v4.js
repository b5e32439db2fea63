// conformance case: crypto/random_uuid_v4
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    return new Response(String(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID())));
  },
};
