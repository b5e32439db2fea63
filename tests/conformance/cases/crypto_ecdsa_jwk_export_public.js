// conformance case: crypto/ecdsa_jwk_export_public
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body EC|P-256|true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
    const jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
    return jwk.kty + "|" + jwk.crv + "|" + (jwk.d === undefined);
    })();
    return new Response(String(result));
  },
};
