// conformance case: streams/pipe_to_writable
// @spec https://streams.spec.whatwg.org/
// @request GET /
// @status 200
// @body abc

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    let out = "";
    const src = new ReadableStream({ start(c) { c.enqueue("a"); c.enqueue("b"); c.enqueue("c"); c.close(); } });
    await src.pipeTo(new WritableStream({ write(chunk) { out += chunk; } }));
    return out;
    })();
    return new Response(String(result));
  },
};
