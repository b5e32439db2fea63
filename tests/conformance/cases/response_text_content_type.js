// conformance case: response/text_content_type
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body text/plain;charset=UTF-8

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Response("x").headers.get("content-type")));
  },
};
