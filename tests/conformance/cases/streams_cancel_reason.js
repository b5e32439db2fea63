// conformance case: streams/cancel_reason
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body why

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    let got;
    const s = new ReadableStream({ cancel(r) { got = r; } });
    await s.cancel("why");
    return got;
    })();
    return new Response(String(result));
  },
};
