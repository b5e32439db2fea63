// conformance case: streams/byob_reader
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body 1,2,3

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream({ type: "bytes", start(c) { c.enqueue(new Uint8Array([1, 2, 3])); c.close(); } });
    const r = s.getReader({ mode: "byob" });
    const { value } = await r.read(new Uint8Array(8));
    return value.join();
    })();
    return new Response(String(result));
  },
};
