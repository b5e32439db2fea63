// conformance case: errors/error_cause
// @spec https://tc39.es/ecma262/#sec-error-objects
// @request GET /
// @status 200
// @body inner

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const e = new Error("outer", { cause: new Error("inner") });
    return e.cause.message;
    })();
    return new Response(String(result));
  },
};
