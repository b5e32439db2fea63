// conformance case: response/head_request_no_body
// @spec https://fetch.spec.whatwg.org/
// @request HEAD /
// @status 200
// @body 

export default {
  async fetch(request, env, ctx) {
    return new Response("body for GET");
  },
};
