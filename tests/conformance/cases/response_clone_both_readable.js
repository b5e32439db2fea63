// conformance case: response/clone_both_readable
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body twicetwice

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Response("twice");
    const c = r.clone();
    return (await r.text()) + (await c.text());
    })();
    return new Response(String(result));
  },
};
