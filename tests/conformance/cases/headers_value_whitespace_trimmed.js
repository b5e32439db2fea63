// conformance case: headers/value_whitespace_trimmed
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body v

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Headers({ a: "  v  " }).get("a")));
  },
};
