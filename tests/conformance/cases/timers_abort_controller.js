// conformance case: timers/abort_controller
// @spec https://dom.spec.whatwg.org/#interface-AbortSignal
// @request GET /
// @status 200
// @body true|AbortError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const c = new AbortController();
    c.abort();
    return c.signal.aborted + "|" + c.signal.reason.name;
    })();
    return new Response(String(result));
  },
};
