// conformance case: request/signal_present
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body boolean

export default {
  async fetch(request, env, ctx) {
    return new Response(String(typeof new Request("http://x/").signal.aborted));
  },
};
