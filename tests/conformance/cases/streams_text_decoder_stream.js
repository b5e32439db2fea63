// conformance case: streams/text_decoder_stream
// @spec https://encoding.spec.whatwg.org/
// @request GET /
// @status 200
// @body ok

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream({ start(c) { c.enqueue(new Uint8Array([111, 107])); c.close(); } }).pipeThrough(new TextDecoderStream());
    return (await s.getReader().read()).value;
    })();
    return new Response(String(result));
  },
};
