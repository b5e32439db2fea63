// conformance case: fetch/request_object_input
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body PUT /echo x-test= body=put body

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const origin = request.headers.get("x-origin");
    const r = await fetch(new Request(origin + "/echo", { method: "PUT", body: "put body" }));
    return await r.text();
    })();
    return new Response(String(result));
  },
};
