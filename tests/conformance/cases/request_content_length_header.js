// conformance case: request/content_length_header
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body 12345
// @status 200
// @body 5

export default {
  async fetch(request, env, ctx) {
    return new Response(String(request.headers.get("content-length")));
  },
};
