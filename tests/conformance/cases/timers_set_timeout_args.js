// conformance case: timers/set_timeout_args
// @spec https://html.spec.whatwg.org/multipage/timers-and-user-prompts.html
// @request GET /
// @status 200
// @body xy

export default {
  async fetch(request, env, ctx) {
    return new Response(String(await new Promise((r) => setTimeout((a, b) => r(a + b), 1, "x", "y"))));
  },
};
