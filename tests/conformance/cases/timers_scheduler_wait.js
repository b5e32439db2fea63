// conformance case: timers/scheduler_wait
// @spec https://developers.cloudflare.com/workers/runtime-apis/scheduler/
// @request GET /
// @status 200
// @body true

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const t = Date.now();
    await scheduler.wait(30);
    return Date.now() - t >= 25;
    })();
    return new Response(String(result));
  },
};
