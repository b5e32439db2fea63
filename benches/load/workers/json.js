// Scenario "json": parse the URL, return a small JSON document.
export default {
  fetch(request) {
    const url = new URL(request.url);
    return Response.json({
      path: url.pathname,
      id: Number(url.searchParams.get("id") ?? 0),
      tags: url.searchParams.getAll("tag"),
      ok: true,
    });
  },
};
