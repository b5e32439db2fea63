// conformance case: response/status_204_empty
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 204
// @body 

export default {
  async fetch(request, env, ctx) {
    return new Response(null, { status: 204 });
  },
};
