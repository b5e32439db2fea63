// conformance case: url/parse_components
// @spec https://url.spec.whatwg.org/
// @request GET /
// @status 200
// @body https:|user|pass|example.com:8080|example.com|8080|/p/a/t/h|?query=string|#hash|https://example.com:8080

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const u = new URL("https://user:pass@example.com:8080/p/a/t/h?query=string#hash");
    return [u.protocol,u.username,u.password,u.host,u.hostname,u.port,u.pathname,u.search,u.hash,u.origin].join("|");
    })();
    return new Response(String(result));
  },
};
