// conformance case: encoding/global_self
// @spec https://developers.cloudflare.com/workers/runtime-apis/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    return new Response(String(self === globalThis));
  },
};
