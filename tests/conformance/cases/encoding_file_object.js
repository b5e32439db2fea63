// conformance case: encoding/file_object
// @spec https://w3c.github.io/FileAPI/
// @request GET /
// @status 200
// @body n.txt|3|text/plain

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const f = new File(["abc"], "n.txt", { type: "text/plain" });
    return f.name + "|" + f.size + "|" + f.type;
    })();
    return new Response(String(result));
  },
};
