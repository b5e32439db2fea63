// conformance case: response/json_static
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @header content-type: application/json
// @body {"a":1}

export default {
  async fetch(request, env, ctx) {
    return Response.json({ a: 1 });
  },
};
