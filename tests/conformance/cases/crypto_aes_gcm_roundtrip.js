// conformance case: crypto/aes_gcm_roundtrip
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body secret|22

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"]);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode("secret"));
    const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv }, key, ct);
    return new TextDecoder().decode(pt) + "|" + ct.byteLength;
    })();
    return new Response(String(result));
  },
};
