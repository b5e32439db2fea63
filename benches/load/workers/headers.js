// Scenario "headers": read 10 request headers and set 10 response headers.
const NAMES = ["accept", "user-agent", "host", "x-h1", "x-h2", "x-h3", "x-h4", "x-h5", "x-h6", "x-h7"];
export default {
  fetch(request) {
    const out = new Headers();
    let total = 0;
    for (let i = 0; i < NAMES.length; i++) {
      const v = request.headers.get(NAMES[i]) ?? "";
      total += v.length;
      out.set(`x-out-${i}`, String(v.length));
    }
    out.set("content-type", "text/plain");
    return new Response(String(total), { headers: out });
  },
};
