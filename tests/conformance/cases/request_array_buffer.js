// conformance case: request/array_buffer
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body abc
// @status 200
// @body 97,98,99

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Uint8Array(await request.arrayBuffer()).join()));
  },
};
