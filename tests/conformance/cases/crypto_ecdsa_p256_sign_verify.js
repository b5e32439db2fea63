// conformance case: crypto/ecdsa_p256_sign_verify
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body true|64

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const data = new TextEncoder().encode("signed");
    const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, data);
    const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pair.publicKey, sig, data);
    return ok + "|" + sig.byteLength;
    })();
    return new Response(String(result));
  },
};
