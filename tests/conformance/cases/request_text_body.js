// conformance case: request/text_body
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body hello body
// @status 200
// @body hello body

export default {
  async fetch(request, env, ctx) {
    return new Response(String(await request.text()));
  },
};
