// conformance case: response/custom_status
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 201
// @body made

export default {
  async fetch(request, env, ctx) {
    return new Response("made", { status: 201, statusText: "Created" });
  },
};
