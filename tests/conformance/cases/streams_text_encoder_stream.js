// conformance case: streams/text_encoder_stream
// @spec https://encoding.spec.whatwg.org/
// @request GET /
// @status 200
// @body hé

export default {
  async fetch(request, env, ctx) {
    const s = new ReadableStream({ start(c) { c.enqueue("h\u00e9"); c.close(); } }).pipeThrough(new TextEncoderStream());
    return new Response(s);
  },
};
