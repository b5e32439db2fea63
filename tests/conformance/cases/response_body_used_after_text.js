// conformance case: response/body_used_after_text
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Response("x");
    await r.text();
    return r.bodyUsed;
    })();
    return new Response(String(result));
  },
};
