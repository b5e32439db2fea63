// conformance case: streams/async_iteration
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body xyz

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ReadableStream({ start(c) { c.enqueue("x"); c.enqueue("y"); c.enqueue("z"); c.close(); } });
    let out = "";
    for await (const chunk of s) out += chunk;
    return out;
    })();
    return new Response(String(result));
  },
};
