// conformance case: crypto/timing_safe_equal
// @spec https://developers.cloudflare.com/workers/runtime-apis/web-crypto/
// @request GET /
// @status 200
// @body true|false

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const e = new TextEncoder();
    return crypto.subtle.timingSafeEqual(e.encode("abc"), e.encode("abc")) + "|" + crypto.subtle.timingSafeEqual(e.encode("abc"), e.encode("abd"));
    })();
    return new Response(String(result));
  },
};
