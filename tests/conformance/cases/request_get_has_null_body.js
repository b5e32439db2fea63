// conformance case: request/get_has_null_body
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    return new Response(String(request.body === null));
  },
};
