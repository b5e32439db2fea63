// conformance case: crypto/timing_safe_equal_length_mismatch
// @spec https://developers.cloudflare.com/workers/runtime-apis/web-crypto/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      crypto.subtle.timingSafeEqual(new Uint8Array(2), new Uint8Array(3));
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
