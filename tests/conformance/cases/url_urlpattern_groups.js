// conformance case: url/urlpattern_groups
// @spec https://urlpattern.spec.whatwg.org/
// @request GET /
// @status 200
// @body 42

export default {
  async fetch(request, env, ctx) {
    return new Response(String(new URLPattern({ pathname: "/users/:id" }).exec("http://x/users/42").pathname.groups.id));
  },
};
