// conformance case: request/form_data_multipart_wire
// @spec https://fetch.spec.whatwg.org/
// @request POST /
// @request-header Content-Type: multipart/form-data; boundary=XyZ
// @request-body --XyZ\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue1\r\n--XyZ\r\nContent-Disposition: form-data; name="up"; filename="f.txt"\r\nContent-Type: text/plain\r\n\r\nfile data\r\n--XyZ--\r\n
// @status 200
// @body value1|f.txt|file data

export default {
  async fetch(request, env, ctx) {
    const result = await (async () => {
    const f = await request.formData();
    const up = f.get("up");
    return f.get("field") + "|" + up.name + "|" + (await up.text());
    })();
    return new Response(String(result));
  },
};
