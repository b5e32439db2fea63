// conformance case: url/invalid_throws_type_error
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new URL("not a url");
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
