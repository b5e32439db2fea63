// conformance case: request/form_data_multipart_roundtrip
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @body value|a.txt|text/plain|content

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const fd = new FormData();
    fd.append("name", "value");
    fd.append("file", new Blob(["content"], { type: "text/plain" }), "a.txt");
    const back = await new Request("http://x/", { method: "POST", body: fd }).formData();
    const f = back.get("file");
    return back.get("name") + "|" + f.name + "|" + f.type + "|" + (await f.text());
    })();
    return new Response(String(result));
  },
};
