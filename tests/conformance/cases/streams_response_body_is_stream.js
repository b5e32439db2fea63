// conformance case: streams/response_body_is_stream
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Response("x").body instanceof ReadableStream));
  },
};
