// conformance case: response/json_method
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body {"x":[true]}

export default {
  async fetch(request, env, ctx) {
    return new Response(String(JSON.stringify(await new Response('{"x":[true]}').json())));
  },
};
