// conformance case: crypto/aes_gcm_known_vector
// @spec https://csrc.nist.rip/groups/ST/toolkit/BCM/documents/proposedmodes/gcm/gcm-spec.pdf (test case 2)
// @request GET /
// @status 200
// @body 0388dace60b6a392f328c2b971b2fe78ab6e47d42cec13bdf53a67b21257bddf

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
    const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "AES-GCM", false, ["encrypt"]);
    return hex(await crypto.subtle.encrypt({ name: "AES-GCM", iv: new Uint8Array(12) }, key, new Uint8Array(16)));
    })();
    return new Response(String(result));
  },
};
