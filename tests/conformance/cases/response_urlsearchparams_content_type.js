// conformance case: response/urlsearchparams_content_type
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body application/x-www-form-urlencoded;charset=UTF-8

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Response(new URLSearchParams("a=1")).headers.get("content-type")));
  },
};
