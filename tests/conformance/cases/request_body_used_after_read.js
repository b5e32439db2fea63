// conformance case: request/body_used_after_read
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body x
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await request.text();
    return request.bodyUsed;
    })();
    return new Response(String(result));
  },
};
