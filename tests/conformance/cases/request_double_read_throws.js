// conformance case: request/double_read_throws
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body x
// @status 200
// @body TypeError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    await request.text();
    try {
      await request.text();
      return "read twice";
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
