// conformance case: fetch/post_echo
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body POST /echo x-test=t body=data

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(origin + "/echo", { method: "POST", body: "data", headers: { "x-test": "t" } });
    return await r.text();
    })();
    return new Response(String(result));
  },
};
