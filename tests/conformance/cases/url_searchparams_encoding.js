// conformance case: url/searchparams_encoding
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body q=a+b%26c%3Dd%2F%C3%A9

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URLSearchParams({ q: "a b&c=d/\u00e9" }).toString()));
  },
};
