// conformance case: timers/abort_signal_timeout
// @spec https://dom.spec.whatwg.org/#interface-AbortSignal
// @request GET /
// @status 200
// @body true|TimeoutError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const s = AbortSignal.timeout(10);
    await scheduler.wait(50);
    return s.aborted + "|" + s.reason.name;
    })();
    return new Response(String(result));
  },
};
