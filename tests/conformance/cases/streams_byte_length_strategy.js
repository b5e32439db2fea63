// conformance case: streams/byte_length_strategy
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body 16|5

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = new ByteLengthQueuingStrategy({ highWaterMark: 16 });
    return s.highWaterMark + "|" + s.size(new Uint8Array(5));
    })();
    return new Response(String(result));
  },
};
