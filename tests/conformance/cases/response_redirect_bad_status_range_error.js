// conformance case: response/redirect_bad_status_range_error
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body RangeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      Response.redirect("http://x/", 200);
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
