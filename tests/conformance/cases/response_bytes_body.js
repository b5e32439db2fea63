// conformance case: response/bytes_body
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body hi

export default {
  async fetch(request, env, ctx) {
    return new Response(new Uint8Array([104, 105]));
  },
};
