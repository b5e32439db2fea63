// conformance case: request/invalid_method_throws
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new Request("http://x/", { method: "BAD METHOD" });
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
