// conformance case: headers/case_insensitive_get
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body text/plain

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Headers({ "Content-Type": "text/plain" }).get("content-type")));
  },
};
