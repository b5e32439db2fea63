// conformance case: encoding/structured_clone_function_throws
// @spec https://html.spec.whatwg.org/multipage/structured-data.html
// @request GET /
// @status 200
// @body DataCloneError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      structuredClone(() => 1);
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
