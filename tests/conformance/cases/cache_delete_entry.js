// conformance case: cache/delete_entry
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body true|false|undefined

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const url = "https://cache.test/d";
    await caches.default.put(url, new Response("x", { headers: { "cache-control": "max-age=60" } }));
    const first = await caches.default.delete(url);
    const second = await caches.default.delete(url);
    return first + "|" + second + "|" + (await caches.default.match(url));
    })();
    return new Response(String(result));
  },
};
