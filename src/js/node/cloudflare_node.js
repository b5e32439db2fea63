// cloudflare:node — `httpServerHandler(server | { port } | port)`: a Workers
// handler object whose fetch() serves the request with a node:http server.
import { handlerFor } from "./http.js";

export function httpServerHandler(target) {
  if (target === undefined || target === null) {
    throw new TypeError("httpServerHandler() takes a node:http server or { port }");
  }
  return { fetch: handlerFor(target) };
}

export default { httpServerHandler };
