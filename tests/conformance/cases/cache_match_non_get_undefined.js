// conformance case: cache/match_non_get_undefined
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await caches.default.put("https://cache.test/m", new Response("x", { headers: { "cache-control": "max-age=60" } }));
    return String(await caches.default.match(new Request("https://cache.test/m", { method: "POST" })));
    })();
    return new Response(String(result));
  },
};
