// conformance case: response/error_static
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body error|0

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = Response.error();
    return r.type + "|" + r.status;
    })();
    return new Response(String(result));
  },
};
