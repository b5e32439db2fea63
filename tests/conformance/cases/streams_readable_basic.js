// conformance case: streams/readable_basic
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body ab

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.close(); } });
    const r = s.getReader();
    let out = "";
    for (;;) { const { value, done } = await r.read(); if (done) break; out += value; }
    return out;
    })();
    return new Response(String(result));
  },
};
