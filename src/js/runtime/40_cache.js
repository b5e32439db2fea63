// edged runtime: the Cache API (`caches.default`, `caches.open(name)`).
//
// Request/response rules live here (what put() refuses with a TypeError, what
// match() ignores); storage, freshness and eviction are behind op_cache_*
// (src/js/cache.rs -> src/state/http_cache.rs). Each worker has its own caches.

import { primordials } from "ext:core/mod.js";
import { op_cache_delete, op_cache_match, op_cache_put } from "ext:core/ops";
import { assertLive } from "ext:edged/00_globals.js";
import { Request, RequestPrototype } from "ext:deno_fetch/23_request.js";
import { Response, ResponsePrototype } from "ext:deno_fetch/23_response.js";
import { URL } from "ext:deno_url/00_url.js";

const {
  ArrayPrototypeFind,
  ArrayPrototypePush,
  ArrayPrototypeSome,
  ObjectPrototypeIsPrototypeOf,
  String,
  StringPrototypeSplit,
  StringPrototypeTrim,
  Symbol,
  TypeError,
  Uint8Array,
} = primordials;

function toRequest(request) {
  if (ObjectPrototypeIsPrototypeOf(RequestPrototype, request)) return request;
  return new Request(String(request));
}

function tokens(list) {
  const parts = StringPrototypeSplit(list, ",");
  const out = [];
  for (let i = 0; i < parts.length; i++) ArrayPrototypePush(out, StringPrototypeTrim(parts[i]));
  return out;
}

function checkUrl(url) {
  const { protocol } = new URL(url);
  if (protocol !== "http:" && protocol !== "https:") {
    throw new TypeError(`Cache key URL must be http or https, got '${protocol}'`);
  }
}

function flatten(headers) {
  const out = [];
  for (const [name, value] of headers) ArrayPrototypePush(out, [name, value]);
  return out;
}

class Cache {
  #name;
  constructor(name, token) {
    if (token !== CONSTRUCT) throw new TypeError("Illegal constructor");
    this.#name = name;
  }

  async match(request, options = undefined) {
    assertLive("cache.match()");
    const req = toRequest(request);
    if (req.method !== "GET" && !options?.ignoreMethod) return undefined;
    checkUrl(req.url);
    const hit = op_cache_match(this.#name, req.url, req.headers.get("accept-encoding") ?? "");
    if (hit === null) return undefined;
    const ifNoneMatch = req.headers.get("if-none-match");
    const etag = ArrayPrototypeFind(hit.headers, (h) => primordials.StringPrototypeToLowerCase(h[0]) === "etag")?.[1];
    if (ifNoneMatch !== null && etag !== undefined &&
      ArrayPrototypeSome(tokens(ifNoneMatch), (t) => t === etag || t === "*")) {
      return new Response(null, { status: 304, headers: hit.headers });
    }
    const nullBody = hit.status === 204 || hit.status === 304 || (hit.status >= 101 && hit.status <= 103);
    return new Response(nullBody ? null : hit.body, { status: hit.status, headers: hit.headers });
  }

  async put(request, response) {
    assertLive("cache.put()");
    const req = toRequest(request);
    if (!ObjectPrototypeIsPrototypeOf(ResponsePrototype, response)) {
      throw new TypeError("Cache.put() requires a Response as its second argument");
    }
    if (req.method !== "GET") {
      throw new TypeError("Cannot cache response to non-GET request.");
    }
    checkUrl(req.url);
    if (response.status === 206) {
      throw new TypeError("Cannot cache response to a range request (206 Partial Content).");
    }
    const vary = response.headers.get("vary");
    if (vary !== null && ArrayPrototypeSome(tokens(vary), (f) => f === "*")) {
      throw new TypeError("Cannot cache response with 'Vary: *' header.");
    }
    if (response.bodyUsed) {
      throw new TypeError("Cannot cache a Response whose body has already been used.");
    }
    const body = new Uint8Array(await response.arrayBuffer());
    op_cache_put(
      this.#name,
      req.url,
      req.headers.get("accept-encoding") ?? "",
      response.status,
      flatten(response.headers),
      body,
    );
    return undefined;
  }

  async delete(request, options = undefined) {
    assertLive("cache.delete()");
    const req = toRequest(request);
    if (req.method !== "GET" && !options?.ignoreMethod) return false;
    checkUrl(req.url);
    return op_cache_delete(this.#name, req.url);
  }
}

const CONSTRUCT = Symbol("construct");

class CacheStorage {
  #default = new Cache("", CONSTRUCT);
  constructor(token) {
    if (token !== CONSTRUCT) throw new TypeError("Illegal constructor");
  }
  get default() {
    return this.#default;
  }
  async open(name) {
    name = String(name);
    if (name === "") throw new TypeError("Cache name must not be empty");
    if (name.length > 1024) throw new TypeError("Cache name is too long (over 1024 characters)");
    // A named cache never shares entries with the default one.
    return new Cache(`named:${name}`, CONSTRUCT);
  }
}

export const caches = new CacheStorage(CONSTRUCT);
export { Cache, CacheStorage };
