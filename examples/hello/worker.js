// The smallest useful worker: greets, echoes JSON, and shows env bindings.
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/json") {
      return Response.json({ path: url.pathname, query: Object.fromEntries(url.searchParams) });
    }
    console.log("hello from", url.pathname);
    return new Response(`Hello from edged! ${env.GREETING ?? ""}\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
};
