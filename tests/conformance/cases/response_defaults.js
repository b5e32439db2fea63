// conformance case: response/defaults
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 200||true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const r = new Response("x");
    return r.status + "|" + r.statusText + "|" + r.ok;
    })();
    return new Response(String(result));
  },
};
