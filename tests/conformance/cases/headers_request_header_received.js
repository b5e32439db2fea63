// conformance case: headers/request_header_received
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @request-header X-Custom: hello there
// @status 200
// @body hello there

export default {
  async fetch(request, env, ctx) {
    return new Response(String(request.headers.get("x-custom")));
  },
};
