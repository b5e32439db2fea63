// conformance case: crypto/aes_raw_export_length
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body 16

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "AES-GCM", true, ["encrypt"]);
    return (await crypto.subtle.exportKey("raw", key)).byteLength;
    })();
    return new Response(String(result));
  },
};
