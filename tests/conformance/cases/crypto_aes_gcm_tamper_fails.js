// conformance case: crypto/aes_gcm_tamper_fails
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body OperationError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 128 }, false, ["encrypt", "decrypt"]);
    const iv = new Uint8Array(12);
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, new TextEncoder().encode("secret")));
    ct[0] ^= 1;
    try { await crypto.subtle.decrypt({ name: "AES-GCM", iv }, key, ct); return "decrypted"; } catch (e) { return e.name; }
    })();
    return new Response(String(result));
  },
};
