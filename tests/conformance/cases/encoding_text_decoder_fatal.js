// conformance case: encoding/text_decoder_fatal
// @spec https://encoding.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff]));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
