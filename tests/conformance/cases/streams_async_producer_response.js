// conformance case: streams/async_producer_response
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body 012

export default {
  async fetch(request, env, ctx) {
    const enc = new TextEncoder();
    let i = 0;
    return new Response(new ReadableStream({ async pull(c) { await scheduler.wait(1); if (i < 3) c.enqueue(enc.encode(String(i++))); else c.close(); } }));
  },
};
