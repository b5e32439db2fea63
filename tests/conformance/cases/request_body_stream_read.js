// conformance case: request/body_stream_read
// @spec https://streams.spec.whatwg.org/
// @request POST /
// @request-body streamed
// @status 200
// @body streamed

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const reader = request.body.getReader();
    const dec = new TextDecoder();
    let out = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += dec.decode(value, { stream: true });
    }
    return out;
    })();
    return new Response(String(result));
  },
};
