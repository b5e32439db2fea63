// conformance case: crypto/digest_sha384
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    return hex(await crypto.subtle.digest("SHA-384", new TextEncoder().encode("abc")));
    })();
    return new Response(String(result));
  },
};
