// conformance case: response/form_data_roundtrip
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body v

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const fd = new FormData();
    fd.append("k", "v");
    const back = await new Response(fd).formData();
    return back.get("k");
    })();
    return new Response(String(result));
  },
};
