// conformance case: cache/no_store_not_cached
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await caches.default.put("https://cache.test/ns", new Response("x", { headers: { "cache-control": "no-store" } }));
    return String(await caches.default.match("https://cache.test/ns"));
    })();
    return new Response(String(result));
  },
};
