// conformance case: encoding/text_decoder_replacement
// @spec https://encoding.spec.whatwg.org/
// @request GET /
// @status 200
// @body a�b

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0x62]))));
  },
};
