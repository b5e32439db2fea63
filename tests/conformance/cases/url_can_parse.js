// conformance case: url/can_parse
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body true,false

export default {
  async fetch(request, env, ctx) {
    return new Response(String(URL.canParse("http://x") + "," + URL.canParse("nope")));
  },
};
