// conformance case: headers/iteration_sorted_lowercase
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body a=1&b=2

export default {
  async fetch(request, env, ctx) {
    return new Response(String([...new Headers([["B", "2"], ["a", "1"]])].map(([k, v]) => k + "=" + v).join("&")));
  },
};
