// conformance case: errors/new_function_disallowed
// @spec https://developers.cloudflare.com/workers/runtime-apis/web-standards/#javascript-standards
// @request GET /
// @status 200
// @body EvalError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      new Function("return 1");
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
