// conformance case: crypto/aes_jwk_export
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body oct|A128GCM|AAAAAAAAAAAAAAAAAAAAAA

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "AES-GCM", true, ["encrypt"]);
    const jwk = await crypto.subtle.exportKey("jwk", key);
    return jwk.kty + "|" + jwk.alg + "|" + jwk.k;
    })();
    return new Response(String(result));
  },
};
