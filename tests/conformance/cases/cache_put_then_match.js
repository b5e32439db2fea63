// conformance case: cache/put_then_match
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body cached body|max-age=60

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const url = "https://cache.test/a";
    await caches.default.put(url, new Response("cached body", { headers: { "cache-control": "max-age=60" } }));
    const hit = await caches.default.match(url);
    return (await hit.text()) + "|" + hit.headers.get("cache-control");
    })();
    return new Response(String(result));
  },
};
