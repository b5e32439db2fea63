// conformance case: headers/invalid_name_throws
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new Headers({ "bad name": "x" });
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
