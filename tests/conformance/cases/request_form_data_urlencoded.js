// conformance case: request/form_data_urlencoded
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-header Content-Type: application/x-www-form-urlencoded
// @request-body a=1&b=x+y
// @status 200
// @body 1|x y

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const f = await request.formData();
    return f.get("a") + "|" + f.get("b");
    })();
    return new Response(String(result));
  },
};
