// conformance case: cache/set_cookie_not_cached
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await caches.default.put("https://cache.test/sc", new Response("x", { headers: { "set-cookie": "a=b", "cache-control": "max-age=60" } }));
    return String(await caches.default.match("https://cache.test/sc"));
    })();
    return new Response(String(result));
  },
};
