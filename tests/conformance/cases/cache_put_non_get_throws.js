// conformance case: cache/put_non_get_throws
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      await caches.default.put(new Request("https://cache.test/p", { method: "POST", body: "x" }), new Response("x"));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
