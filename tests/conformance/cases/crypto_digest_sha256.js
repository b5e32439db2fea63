// conformance case: crypto/digest_sha256
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc")));
    })();
    return new Response(String(result));
  },
};
