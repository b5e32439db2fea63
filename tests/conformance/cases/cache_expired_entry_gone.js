// conformance case: cache/expired_entry_gone
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await caches.default.put("https://cache.test/e", new Response("x", { headers: { "cache-control": "max-age=1" } }));
    await scheduler.wait(1100);
    return String(await caches.default.match("https://cache.test/e"));
    })();
    return new Response(String(result));
  },
};
