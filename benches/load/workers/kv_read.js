// Scenario "kv-read": read a hot key through the KV binding `KV`.
export default {
  async fetch(request, env) {
    const value = await env.KV.get("hot");
    return new Response(value ?? "missing", { status: value === null ? 500 : 200 });
  },
};
