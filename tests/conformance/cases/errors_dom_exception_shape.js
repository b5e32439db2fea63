// conformance case: errors/dom_exception_shape
// @spec https://webidl.spec.whatwg.org/#idl-DOMException
// @request GET /
// @status 200
// @body AbortError|20|true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const e = new DOMException("m", "AbortError");
    return e.name + "|" + e.code + "|" + (e instanceof Error);
    })();
    return new Response(String(result));
  },
};
