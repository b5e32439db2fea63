// conformance case: encoding/blob_array_buffer
// @spec https://w3c.github.io/FileAPI/
// @request GET /
// @status 200
// @body 1,2

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new Uint8Array(await new Blob([new Uint8Array([1, 2])]).arrayBuffer()).join()));
  },
};
