// conformance case: encoding/atob_btoa
// @spec https://html.spec.whatwg.org/multipage/webappapis.html#atob
// @request GET /
// @status 200
// @body aGVsbG8=|hi

export default {
  async fetch(request, env, ctx) {
    return new Response(String(btoa("hello") + "|" + atob("aGk=")));
  },
};
