// conformance case: crypto/digest_sha1
// @spec https://w3c.github.io/webcrypto/
// @request GET /
// @status 200
// @body a9993e364706816aba3e25717850c26c9cd0d89d

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    return hex(await crypto.subtle.digest("SHA-1", new TextEncoder().encode("abc")));
    })();
    return new Response(String(result));
  },
};
