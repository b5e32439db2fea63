// conformance case: fetch/redirect_manual
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body 302|/redirect/1

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/redirect/2", { redirect: "manual" });
    return r.status + "|" + r.headers.get("location");
    })();
    return new Response(String(result));
  },
};
