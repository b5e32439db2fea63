// conformance case: timers/abort_signal_any
// @spec https://dom.spec.whatwg.org/#interface-AbortSignal
// @request GET /
// @status 200
// @body true|first

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const a = new AbortController();
    const s = AbortSignal.any([a.signal, new AbortController().signal]);
    a.abort("first");
    return s.aborted + "|" + s.reason;
    })();
    return new Response(String(result));
  },
};
