// conformance case: request/json_body
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-header Content-Type: application/json
// @request-body {"a":[1,2]}
// @status 200
// @body {"a":[1,2]}

export default {
  async fetch(request, env, ctx) {
    return new Response(String(JSON.stringify(await request.json())));
  },
};
