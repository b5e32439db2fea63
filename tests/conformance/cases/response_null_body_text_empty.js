// conformance case: response/null_body_text_empty
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body []

export default {
  async fetch(request, env, ctx) {
    return new Response(String("[" + (await new Response(null).text()) + "]"));
  },
};
