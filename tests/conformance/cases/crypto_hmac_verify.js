// conformance case: crypto/hmac_verify
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body true|false

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const enc = new TextEncoder();
    const key = await crypto.subtle.generateKey({ name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    const sig = await crypto.subtle.sign("HMAC", key, enc.encode("msg"));
    const ok = await crypto.subtle.verify("HMAC", key, sig, enc.encode("msg"));
    const bad = await crypto.subtle.verify("HMAC", key, sig, enc.encode("msh"));
    return ok + "|" + bad;
    })();
    return new Response(String(result));
  },
};
