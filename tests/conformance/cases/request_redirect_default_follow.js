// conformance case: request/redirect_default_follow
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body follow

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Request("http://x/").redirect));
  },
};
