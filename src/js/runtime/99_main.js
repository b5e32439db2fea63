// edged runtime entry point: evaluated once into the startup snapshot.
// Hands Rust the two functions it drives per isolate; Rust takes them out of the
// global scope (and removes `Deno`) before any tenant code runs.

import "ext:edged/00_globals.js";
import { bind, bindObjects, prepare, warmup } from "ext:edged/10_worker.js";
import { Cache, caches, CacheStorage } from "ext:edged/40_cache.js";

Object.defineProperties(globalThis, {
  caches: { value: caches, writable: true, enumerable: false, configurable: true },
  Cache: { value: Cache, writable: true, enumerable: false, configurable: true },
  CacheStorage: { value: CacheStorage, writable: true, enumerable: false, configurable: true },
});

Object.defineProperty(globalThis, "__edged_internals", {
  value: { prepare, bind, bindObjects, warmup },
  configurable: true,
  enumerable: false,
  writable: false,
});
