// conformance case: response/clone_after_use_throws
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Response("x");
    await r.text();
    try {
      r.clone();
      return "cloned";
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
