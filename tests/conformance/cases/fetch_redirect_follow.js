// conformance case: fetch/redirect_follow
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body true|/redirect/0|landed

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/redirect/2");
    return r.redirected + "|" + new URL(r.url).pathname + "|" + (await r.text());
    })();
    return new Response(String(result));
  },
};
