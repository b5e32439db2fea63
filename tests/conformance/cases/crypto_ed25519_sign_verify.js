// conformance case: crypto/ed25519_sign_verify
// @spec https://developers.cloudflare.com/workers/runtime-apis/web-crypto/
// @request GET /
// @status 200
// @body true|false|64

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const data = new TextEncoder().encode("signed");
    const sig = await crypto.subtle.sign("Ed25519", pair.privateKey, data);
    const ok = await crypto.subtle.verify("Ed25519", pair.publicKey, sig, data);
    const bad = await crypto.subtle.verify("Ed25519", pair.publicKey, sig, new TextEncoder().encode("other"));
    return ok + "|" + bad + "|" + sig.byteLength;
    })();
    return new Response(String(result));
  },
};
