// conformance case: encoding/structured_clone_map_date
// @spec https://html.spec.whatwg.org/multipage/structured-data.html
// @request GET /
// @status 200
// @body 1|1970-01-01T00:00:00.000Z

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const v = structuredClone({ m: new Map([["a", 1]]), d: new Date(0) });
    return v.m.get("a") + "|" + v.d.toISOString();
    })();
    return new Response(String(result));
  },
};
