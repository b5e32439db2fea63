// conformance case: url/to_json
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body {"u":"http://x/y"}

export default {
  async fetch(request, env, ctx) {
    return new Response(String(JSON.stringify({ u: new URL("http://x/y") })));
  },
};
