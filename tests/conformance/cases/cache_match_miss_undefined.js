// conformance case: cache/match_miss_undefined
// @spec https://developers.cloudflare.com/workers/runtime-apis/cache/
// @request GET /
// @status 200
// @body undefined

export default {
  async fetch(request, env, ctx) {
    return new Response(String(await caches.default.match("https://cache.test/nothing")));
  },
};
