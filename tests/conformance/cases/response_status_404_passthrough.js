// conformance case: response/status_404_passthrough
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 404
// @body not here

export default {
  async fetch(request, env, ctx) {
    return new Response("not here", { status: 404 });
  },
};
