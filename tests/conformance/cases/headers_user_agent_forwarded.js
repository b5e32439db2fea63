// conformance case: headers/user_agent_forwarded
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @request-header User-Agent: conformance-runner
// @status 200
// @body conformance-runner

export default {
  async fetch(request, env, ctx) {
    return new Response(String(request.headers.get("user-agent")));
  },
};
