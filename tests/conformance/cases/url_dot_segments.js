// conformance case: url/dot_segments
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body /a/c

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URL("http://x/a/./b/../c").pathname));
  },
};
