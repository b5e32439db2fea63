// conformance case: encoding/blob_slice_type
// @spec https://w3c.github.io/FileAPI/
// @request GET /
// @status 200
// @body world|11|text/plain

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const b = new Blob(["hello world"], { type: "text/plain" });
    return (await b.slice(6).text()) + "|" + b.size + "|" + b.type;
    })();
    return new Response(String(result));
  },
};
