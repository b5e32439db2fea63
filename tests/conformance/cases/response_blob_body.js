// conformance case: response/blob_body
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body abcd

export default {
  async fetch(request, env, ctx) {
    return new Response(String(await new Response(new Blob(["ab", "cd"])).text()));
  },
};
