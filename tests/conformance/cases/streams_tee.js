// conformance case: streams/tee
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body x|x

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const [a, b] = new ReadableStream({ start(c) { c.enqueue("x"); c.close(); } }).tee();
    const x = (await a.getReader().read()).value;
    const y = (await b.getReader().read()).value;
    return x + "|" + y;
    })();
    return new Response(String(result));
  },
};
