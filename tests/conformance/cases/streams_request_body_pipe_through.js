// conformance case: streams/request_body_pipe_through
// @spec https://streams.spec.whatwg.org/
// @request POST /
// @request-body pipe
// @status 200
// @body pipe

export default {
  async fetch(request, env, ctx) {
    return new Response(request.body.pipeThrough(new TransformStream()));
  },
};
