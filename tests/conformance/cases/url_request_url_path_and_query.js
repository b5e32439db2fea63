// conformance case: url/request_url_path_and_query
// @spec https://url.spec.whatwg.org/
// @request GET /some/path?x=1&y=%20
// @status 200
// @body /some/path?x=1&y=%20

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const u = new URL(request.url);
    return u.pathname + u.search;
    })();
    return new Response(String(result));
  },
};
