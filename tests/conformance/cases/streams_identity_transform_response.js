// conformance case: streams/identity_transform_response
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body later

export default {
  async fetch(request, env, ctx) {
    const { readable, writable } = new TransformStream();
    const w = writable.getWriter();
    w.write(new TextEncoder().encode("later"));
    w.close();
    return new Response(readable);
  },
};
