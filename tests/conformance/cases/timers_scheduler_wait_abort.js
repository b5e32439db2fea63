// conformance case: timers/scheduler_wait_abort
// @spec https://developers.cloudflare.com/workers/runtime-apis/scheduler/
// @request GET /
// @status 200
// @body stop

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const c = new AbortController();
    setTimeout(() => c.abort(new Error("stop")), 5);
    try { await scheduler.wait(10000, { signal: c.signal }); return "waited"; } catch (e) { return e.message; }
    })();
    return new Response(String(result));
  },
};
