// conformance case: headers/response_header_sent
// @spec https://fetch.spec.whatwg.org/
// @request GET /
// @status 200
// @header x-reply: yes
// @header cache-control: no-cache
// @body x

export default {
  async fetch(request, env, ctx) {
    return new Response("x", { headers: { "X-Reply": "yes", "Cache-Control": "no-cache" } });
  },
};
