// conformance case: errors/caught_syntax_error
// @spec https://developers.cloudflare.com/workers/observability/errors/
// @request GET /
// @status 200
// @body SyntaxError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try { JSON.parse("{"); return "parsed"; } catch (e) { return e.name; }
    })();
    return new Response(String(result));
  },
};
