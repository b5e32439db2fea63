// conformance case: response/redirect_static
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 301
// @header location: http://x/y

export default {
  async fetch(request, env, ctx) {
    return Response.redirect("http://x/y", 301);
  },
};
