// Stands in for deno_net's 02_tls.js, which deno_fetch's 22_http_client.js imports
// for Deno.createHttpClient. Workers have no custom HTTP clients, so the one
// function it uses refuses.
export function loadTlsKeyPair(api) {
  throw new TypeError(`${api} is not available in Workers`);
}
