// conformance case: crypto/hmac_import_jwk
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    const key = await crypto.subtle.importKey("jwk", { kty: "oct", k: "a2V5", alg: "HS256" }, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode("The quick brown fox jumps over the lazy dog")));
    })();
    return new Response(String(result));
  },
};
