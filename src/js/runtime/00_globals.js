// edged runtime: the Workers global scope.
//
// deno's extensions implement the Web APIs (WHATWG URL, Fetch's Request/Response/
// Headers, streams, encoding, Web Crypto); this file exposes them on globalThis the
// way a Workers isolate sees them, and replaces `console` with one whose output goes
// to the node's tracing log, tagged with the worker and the request id.
//
// Runs once when the startup snapshot is made; every isolate starts from the result.

import { core } from "ext:core/mod.js";
import { op_edged_log, op_edged_timing_safe_equal } from "ext:core/ops";
import { DOMException } from "ext:deno_web/01_dom_exception.js";
import * as event from "ext:deno_web/02_event.js";
import * as timers from "ext:deno_web/02_timers.js";
import * as abortSignal from "ext:deno_web/03_abort_signal.js";
import * as base64 from "ext:deno_web/05_base64.js";
import * as streams from "ext:deno_web/06_streams.js";
import * as encoding from "ext:deno_web/08_text_encoding.js";
import * as file from "ext:deno_web/09_file.js";
import * as messagePort from "ext:deno_web/13_message_port.js";
import * as compression from "ext:deno_web/14_compression.js";
import * as performance from "ext:deno_web/15_performance.js";
import * as url from "ext:deno_url/00_url.js";
import * as urlPattern from "ext:deno_url/01_urlpattern.js";
import { Console, setNoColorFns } from "ext:deno_console/01_console.js";
import * as headers from "ext:deno_fetch/20_headers.js";
import * as formData from "ext:deno_fetch/21_formdata.js";
import * as request from "ext:deno_fetch/23_request.js";
import * as response from "ext:deno_fetch/23_response.js";
import * as fetch from "ext:deno_fetch/26_fetch.js";
import * as crypto from "ext:deno_crypto/00_crypto.js";

function writable(value) {
  return { value, writable: true, enumerable: false, configurable: true };
}
function readOnly(value) {
  return { value, enumerable: true, writable: false, configurable: true };
}

// The request a piece of code runs for: kept in V8's continuation-preserved data,
// so it follows promise chains (console lines from an awaited callback keep their id).
export function currentRequestId() {
  const id = core.getAsyncContext();
  return typeof id === "number" ? id : 0;
}

// How many worker-to-worker calls led to each request in flight (service
// bindings pass it on, so chains are bounded).
const depths = new Map();
export function setRequestDepth(id, depth) {
  if (depth === 0) return;
  depths.set(id, depth);
  if (depths.size > 4096) depths.delete(depths.keys().next().value);
}
export function currentDepth() {
  return depths.get(currentRequestId()) ?? 0;
}

// Requests whose ctx.waitUntil() window has closed: their remaining I/O fails.
// Request ids only grow, so the oldest entries are the first to drop.
const TRACKED = 4096;
const expired = new Set();
export function expireRequest(id) {
  expired.add(id);
  if (expired.size > TRACKED) expired.delete(expired.values().next().value);
}
export function assertLive(api) {
  const id = currentRequestId();
  if (id !== 0 && expired.has(id)) {
    throw new Error(
      `${api}: this request's ctx.waitUntil() time is over, so its remaining I/O was cancelled`,
    );
  }
}

// Outbound fetch(): deno's implementation (WHATWG fetch with streaming bodies,
// redirects, AbortSignal) behind the per-request subrequest limit. The node's
// egress policy is checked in Rust for every hop; its refusal becomes a TypeError.
let subrequestLimit = 50;
const subrequests = new Map();
const ERROR_CLASSES = { Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError };

// An error from another worker or object (a service binding, a Durable Object
// stub): its exception arrives as "Name: message" and is rethrown with its class
// and message, as Workers does, marked `remote`; limit kills and full queues are
// also marked `overloaded`.
export function fromRemote(e) {
  if (!(e instanceof Error)) return e;
  const m = /^([A-Za-z]*Error): ([\s\S]*)$/.exec(e.message);
  const err = m !== null && Object.hasOwn(ERROR_CLASSES, m[1]) ? new ERROR_CLASSES[m[1]](m[2]) : e;
  err.remote = true;
  if (String(err.message).includes("overloaded")) err.overloaded = true;
  return err;
}

// A Durable Object's output gate for outgoing messages (set in an object's
// isolate): fetch(), calls to other objects and service calls wait until the
// object's writes made so far are durable, and fail if they cannot be stored.
let outputGate = null;
export function setOutputGate(gate) {
  outputGate = gate;
}
export async function beforeOutgoing() {
  if (outputGate !== null) await outputGate();
}

export function configureFetch(limit) {
  subrequestLimit = limit;
}
const NOT_GRANTED = /^Requires ([\s\S]*), which cannot be granted in this environment$/;
export function rethrowFetchError(e) {
  if (e?.name === "NotCapable") {
    const m = NOT_GRANTED.exec(e.message);
    throw new TypeError(m ? m[1] : e.message);
  }
  throw e;
}
async function workersFetch(input, init = undefined) {
  assertLive("fetch()");
  const id = currentRequestId();
  const n = (subrequests.get(id) ?? 0) + 1;
  subrequests.set(id, n);
  if (subrequests.size > TRACKED) subrequests.delete(subrequests.keys().next().value);
  if (n > subrequestLimit) {
    throw new Error(
      `Too many subrequests. A request may make at most ${subrequestLimit} fetch() calls.`,
    );
  }
  if (outputGate !== null) await outputGate();
  try {
    return await fetch.fetch(input, init);
  } catch (e) {
    rethrowFetchError(e);
  }
}
Object.defineProperty(workersFetch, "name", { value: "fetch" });

// Durable Objects that share an isolate (an object host): which object each
// request id serves, and the timers each object started, so that an object that
// leaves the isolate (hibernation, eviction, reset) takes its timers with it, as
// a per-object isolate would. Request ids of object events are unique per node.
let trackTimers = false;
const slotOfRequest = new Map();
const slotOfTimer = new Map();
const timersOfSlot = new Map();
export function trackObjectTimers() {
  trackTimers = true;
}
export function setRequestSlot(id, slot) {
  slotOfRequest.set(id, slot);
  if (slotOfRequest.size > TRACKED) slotOfRequest.delete(slotOfRequest.keys().next().value);
}
function ownTimer(id) {
  const slot = slotOfRequest.get(currentRequestId());
  if (slot === undefined) return;
  slotOfTimer.set(id, slot);
  let set = timersOfSlot.get(slot);
  if (set === undefined) timersOfSlot.set(slot, (set = new Set()));
  set.add(id);
}
function disownTimer(id) {
  const slot = slotOfTimer.get(id);
  if (slot === undefined) return;
  slotOfTimer.delete(id);
  timersOfSlot.get(slot)?.delete(id);
}
export function cancelObjectTimers(slot) {
  for (const id of timersOfSlot.get(slot) ?? []) {
    slotOfTimer.delete(id);
    rawClearTimeout(id);
  }
  timersOfSlot.delete(slot);
}
// Called unbound: deno's timers reject any receiver other than globalThis.
const rawSetTimeout = timers.setTimeout;
const rawSetInterval = timers.setInterval;
const rawClearTimeout = timers.clearTimeout;
const rawClearInterval = timers.clearInterval;
const trackedTimers = {
  setTimeout(callback, delay = 0, ...args) {
    if (!trackTimers || typeof callback !== "function") return rawSetTimeout(callback, delay, ...args);
    const id = rawSetTimeout(function (...a) {
      disownTimer(id);
      return callback.apply(this, a);
    }, delay, ...args);
    ownTimer(id);
    return id;
  },
  setInterval(callback, delay = 0, ...args) {
    const id = rawSetInterval(callback, delay, ...args);
    if (trackTimers) ownTimer(id);
    return id;
  },
  clearTimeout(id = undefined) {
    if (trackTimers) disownTimer(id);
    rawClearTimeout(id);
  },
  clearInterval(id = undefined) {
    if (trackTimers) disownTimer(id);
    rawClearInterval(id);
  },
};

// scheduler.wait(ms): a promise-based timer, as in Workers.
const setTimeoutFn = timers.setTimeout;
const clearTimeoutFn = timers.clearTimeout;
const scheduler = Object.freeze({
  wait(ms, options = undefined) {
    const signal = options?.signal;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeoutFn(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Number(ms) || 0);
      function onAbort() {
        clearTimeoutFn(timer);
        reject(signal.reason);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
});

// Log lines are plain text: no terminal colours in inspected values.
setNoColorFns(() => true, () => true);

const console = new Console((msg, level) => {
  // deno's Console ends every message with "\n"; the log adds its own.
  const text = msg.endsWith("\n") ? msg.slice(0, -1) : msg;
  op_edged_log(level, currentRequestId(), text);
});

Object.defineProperties(globalThis, {
  // WHATWG URL and URLPattern
  URL: writable(url.URL),
  URLSearchParams: writable(url.URLSearchParams),
  URLPattern: writable(urlPattern.URLPattern),
  // Fetch
  Headers: writable(headers.Headers),
  Request: writable(request.Request),
  Response: writable(response.Response),
  FormData: writable(formData.FormData),
  fetch: writable(workersFetch),
  // Encoding, base64
  TextEncoder: writable(encoding.TextEncoder),
  TextDecoder: writable(encoding.TextDecoder),
  TextEncoderStream: writable(encoding.TextEncoderStream),
  TextDecoderStream: writable(encoding.TextDecoderStream),
  atob: writable(base64.atob),
  btoa: writable(base64.btoa),
  // Streams
  ReadableStream: writable(streams.ReadableStream),
  ReadableStreamDefaultReader: writable(streams.ReadableStreamDefaultReader),
  ReadableStreamBYOBReader: writable(streams.ReadableStreamBYOBReader),
  ReadableByteStreamController: writable(streams.ReadableByteStreamController),
  ReadableStreamDefaultController: writable(streams.ReadableStreamDefaultController),
  WritableStream: writable(streams.WritableStream),
  WritableStreamDefaultWriter: writable(streams.WritableStreamDefaultWriter),
  TransformStream: writable(streams.TransformStream),
  ByteLengthQueuingStrategy: writable(streams.ByteLengthQueuingStrategy),
  CountQueuingStrategy: writable(streams.CountQueuingStrategy),
  CompressionStream: writable(compression.CompressionStream),
  DecompressionStream: writable(compression.DecompressionStream),
  // Blobs and files
  Blob: writable(file.Blob),
  File: writable(file.File),
  // Events, abort
  Event: writable(event.Event),
  EventTarget: writable(event.EventTarget),
  CustomEvent: writable(event.CustomEvent),
  ErrorEvent: writable(event.ErrorEvent),
  MessageEvent: writable(event.MessageEvent),
  PromiseRejectionEvent: writable(event.PromiseRejectionEvent),
  AbortController: writable(abortSignal.AbortController),
  AbortSignal: writable(abortSignal.AbortSignal),
  DOMException: writable(DOMException),
  MessageChannel: writable(messagePort.MessageChannel),
  MessagePort: writable(messagePort.MessagePort),
  // Timers, cloning, performance
  setTimeout: writable(trackedTimers.setTimeout),
  setInterval: writable(trackedTimers.setInterval),
  clearTimeout: writable(trackedTimers.clearTimeout),
  clearInterval: writable(trackedTimers.clearInterval),
  scheduler: writable(scheduler),
  structuredClone: writable(messagePort.structuredClone),
  performance: writable(performance.performance),
  // Web Crypto
  crypto: readOnly(crypto.crypto),
  Crypto: writable(crypto.Crypto),
  CryptoKey: writable(crypto.CryptoKey),
  SubtleCrypto: writable(crypto.SubtleCrypto),
  // console
  console: writable(console),
  // Workers exposes `self` as the global scope.
  self: { get: () => globalThis, configurable: true, enumerable: true },
  navigator: readOnly(Object.freeze({ userAgent: "edged", hardwareConcurrency: 1 })),
});

event.saveGlobalThisReference(globalThis);

// Workers' extension to SubtleCrypto: constant-time comparison of two buffers.
function asView(value, which) {
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return new Uint8Array(value);
  throw new TypeError(
    `Failed to execute 'timingSafeEqual' on 'SubtleCrypto': parameter ${which} is not of type 'ArrayBuffer or ArrayBufferView'.`,
  );
}
Object.defineProperty(crypto.SubtleCrypto.prototype, "timingSafeEqual", {
  value: function timingSafeEqual(a, b) {
    const x = asView(a, 1);
    const y = asView(b, 2);
    if (x.byteLength !== y.byteLength) {
      throw new TypeError("Input buffers must have the same byte length.");
    }
    return op_edged_timing_safe_equal(x, y);
  },
  writable: true,
  enumerable: false,
  configurable: true,
});

export { headers, request, response, streams };

// A tenant's stray rejection or an exception in a timer callback is logged against
// the request it came from; it does not take the isolate (or other requests) down.
core.setUnhandledPromiseRejectionHandler((_promise, reason) => {
  console.error("Uncaught (in promise)", reason);
  return true;
});
core.setReportExceptionCallback((error) => {
  console.error("Uncaught", error);
});

// Errors raised by Rust ops arrive by class name; give each its Web class
// (deno_core itself registers the JS built-ins, BadResource and NotCapable).
for (const name of ["OperationError", "NotSupportedError", "QuotaExceededError", "InvalidCharacterError", "DataError"]) {
  core.registerErrorBuilder(`DOMException${name}`, (msg) => new DOMException(msg, name));
}
core.registerErrorClass("NotSupported", TypeError);
core.registerErrorClass("Busy", Error);
