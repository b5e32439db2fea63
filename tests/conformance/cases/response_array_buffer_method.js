// conformance case: response/array_buffer_method
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 65,66

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Uint8Array(await new Response("AB").arrayBuffer()).join()));
  },
};
