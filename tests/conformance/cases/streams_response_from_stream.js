// conformance case: streams/response_from_stream
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body one two

export default {
  async fetch(request, env, ctx) {
    const enc = new TextEncoder();
    return new Response(new ReadableStream({ start(c) { c.enqueue(enc.encode("one ")); c.enqueue(enc.encode("two")); c.close(); } }));
  },
};
