// conformance case: cache/named_cache_separate
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined|named|x

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const url = "https://cache.test/n";
    await caches.default.put(url, new Response("x", { headers: { "cache-control": "max-age=60" } }));
    const named = await caches.open("mine");
    const before = await named.match(url);
    await named.put(url, new Response("named", { headers: { "cache-control": "max-age=60" } }));
    return String(before) + "|" + (await (await named.match(url)).text()) + "|" + (await (await caches.default.match(url)).text());
    })();
    return new Response(String(result));
  },
};
