// conformance case: streams/compression_roundtrip
// @spec https://compression.spec.whatwg.org/
// @request GET /
// @status 200
// @body compress me

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const input = new Response("compress me").body;
    const back = input.pipeThrough(new CompressionStream("gzip")).pipeThrough(new DecompressionStream("gzip"));
    return await new Response(back).text();
    })();
    return new Response(String(result));
  },
};
