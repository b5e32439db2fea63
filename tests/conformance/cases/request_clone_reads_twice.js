// conformance case: request/clone_reads_twice
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body dup
// @status 200
// @body dupdup

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const c = request.clone();
    return (await request.text()) + (await c.text());
    })();
    return new Response(String(result));
  },
};
