// conformance case: response/invalid_status_range_error
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body RangeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new Response("x", { status: 99 });
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
