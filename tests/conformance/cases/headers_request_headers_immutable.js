// conformance case: headers/request_headers_immutable
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      request.headers.set("x", "y");
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
