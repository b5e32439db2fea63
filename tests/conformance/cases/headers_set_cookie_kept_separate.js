// conformance case: headers/set_cookie_kept_separate
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body ["a=1","b=2"]|2

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const h = new Headers();
    h.append("Set-Cookie", "a=1");
    h.append("Set-Cookie", "b=2");
    return JSON.stringify(h.getSetCookie()) + "|" + [...h].length;
    })();
    return new Response(String(result));
  },
};
