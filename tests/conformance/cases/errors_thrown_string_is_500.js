// conformance case: errors/thrown_string_is_500
// @spec https://developers.cloudflare.com/workers/observability/errors/
// @request GET /
// @status 500

export default {
  async fetch(request, env, ctx) {
    throw "a string";
  },
};
