// workerd side of "kv-read": an in-memory KV store behind workerd's kvNamespace
// binding (workerd forwards KV reads to a service as HTTP GETs of the key).
const DATA = new Map([["hot", "hot value: ".padEnd(64, "x")]]);
export default {
  async fetch(request) {
    const url = new URL(request.url);
    const key = decodeURIComponent(url.pathname.slice(1));
    if (request.method === "GET" && DATA.has(key)) return new Response(DATA.get(key));
    return new Response(null, { status: 404 });
  },
};
