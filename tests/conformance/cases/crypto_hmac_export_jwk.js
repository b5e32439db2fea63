// conformance case: crypto/hmac_export_jwk
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body oct|AQIDBA|HS256

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const key = await crypto.subtle.importKey("raw", new Uint8Array([1, 2, 3, 4]), { name: "HMAC", hash: "SHA-256" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", key);
    return jwk.kty + "|" + jwk.k + "|" + jwk.alg;
    })();
    return new Response(String(result));
  },
};
