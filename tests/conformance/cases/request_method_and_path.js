// conformance case: request/method_and_path
// @spec https://fetch.spec.whatwg.org/
// @request POST /r
// @request-body x
// @status 200
// @body POST /r

export default {
  async fetch(request, env, ctx) {
    return new Response(String(request.method + " " + new URL(request.url).pathname));
  },
};
