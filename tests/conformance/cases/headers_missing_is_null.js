// conformance case: headers/missing_is_null
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body null

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Headers().get("nope")));
  },
};
