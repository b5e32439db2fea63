// conformance case: crypto/digest_sha512
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    return hex(await crypto.subtle.digest("SHA-512", new TextEncoder().encode("abc")));
    })();
    return new Response(String(result));
  },
};
