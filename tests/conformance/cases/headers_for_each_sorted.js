// conformance case: headers/for_each_sorted
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body a1,b2

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const out = [];
    new Headers({ b: "2", a: "1" }).forEach((v, k) => out.push(k + v));
    return out.join();
    })();
    return new Response(String(result));
  },
};
