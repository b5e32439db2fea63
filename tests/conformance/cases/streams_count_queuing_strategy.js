// conformance case: streams/count_queuing_strategy
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body 3

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new CountQueuingStrategy({ highWaterMark: 3 }).highWaterMark));
  },
};
