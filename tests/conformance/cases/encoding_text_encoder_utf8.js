// conformance case: encoding/text_encoder_utf8
// @spec https://encoding.spec.whatwg.org/
// @request GET /
// @status 200
// @body 226,130,172

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new TextEncoder().encode("\u20ac").join()));
  },
};
