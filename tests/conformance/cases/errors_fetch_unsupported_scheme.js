// conformance case: errors/fetch_unsupported_scheme
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      await fetch("ftp://example.com/");
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
