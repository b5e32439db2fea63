// conformance case: streams/transform_uppercase
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body HELLO

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const t = new TransformStream({ transform(chunk, c) { c.enqueue(chunk.toUpperCase()); } });
    const w = t.writable.getWriter();
    w.write("hello");
    w.close();
    const { value } = await t.readable.getReader().read();
    return value;
    })();
    return new Response(String(result));
  },
};
