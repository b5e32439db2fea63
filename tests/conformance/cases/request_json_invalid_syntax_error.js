// conformance case: request/json_invalid_syntax_error
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-body {bad
// @status 200
// @body SyntaxError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      await request.json();
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
