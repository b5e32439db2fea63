// conformance case: encoding/btoa_non_latin1
// @spec https://html.spec.whatwg.org/multipage/webappapis.html#atob
// @request GET /
// @status 200
// @body InvalidCharacterError

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    try {
      btoa("\u20ac");
      return 'no error';
    } catch (e) {
      return e.name;
    }
    })();
    return new Response(String(result));
  },
};
