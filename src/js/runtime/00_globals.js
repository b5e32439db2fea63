// edged runtime: the Workers global scope.
//
// deno's extensions implement the Web APIs (WHATWG URL, Fetch's Request/Response/
// Headers, streams, encoding, Web Crypto); this file exposes them on globalThis the
// way a Workers isolate sees them, and replaces `console` with one whose output goes
// to the node's tracing log, tagged (in Rust) with the worker and the request id.
//
// Runs once when the startup snapshot is made; every isolate starts from the result.
//
// Sealing. Tenant code shares this realm, so nothing here may rely on anything it
// can patch: intrinsics are taken from `primordials` (captured before any tenant
// code exists), globals are referenced through module bindings, never looked up
// on globalThis at call time, and arrays are walked by index (no iterator
// protocol). What the runtime enforces per request (subrequests, call depth,
// the waitUntil window, which request a timer or a log line belongs to) is
// decided in Rust from V8's request context (src/js/context.rs); this file only
// calls the ops at the points a tenant cannot skip.

import { core, primordials } from "ext:core/mod.js";
import {
  op_edged_assert_live,
  op_edged_date_now,
  op_edged_log,
  op_edged_offthread_begin,
  op_edged_offthread_end,
  op_edged_subrequest,
  op_edged_timer_clear,
  op_edged_timer_fire,
  op_edged_timer_start,
  op_edged_timing_safe_equal,
} from "ext:core/ops";
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
import { bytesOf } from "ext:edged/05_body.js";
import * as websocket from "ext:edged/15_websocket.js";

const {
  ArrayPrototypePush,
  Date: IntrinsicDate,
  DatePrototypeToString,
  Error,
  EvalError,
  FunctionPrototypeCall,
  ObjectDefineProperties,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectGetOwnPropertyDescriptor,
  Number,
  ObjectPrototypeIsPrototypeOf,
  Promise,
  RangeError,
  ReferenceError,
  ReflectApply,
  ReflectConstruct,
  RegExpPrototypeExec,
  SafeRegExp,
  SafeWeakMap,
  WeakMapPrototypeGet,
  WeakMapPrototypeSet,
  StringPrototypeEndsWith,
  StringPrototypeIncludes,
  StringPrototypeSlice,
  StringPrototypeStartsWith,
  StringPrototypeToLowerCase,
  StringPrototypeToUpperCase,
  SyntaxError,
  TypedArrayPrototypeGetByteLength,
  TypeError,
  URIError,
} = primordials;

function writable(value) {
  return { value, writable: true, enumerable: false, configurable: true };
}
function readOnly(value) {
  return { value, enumerable: true, writable: false, configurable: true };
}

// Checks that the calling request may still start I/O (Rust decides: the
// request must be live, and code outside any request may not do I/O).
export function assertLive(api) {
  op_edged_assert_live(api);
}

// Outbound fetch(): deno's implementation (WHATWG fetch with streaming bodies,
// redirects, AbortSignal) behind the per-request subrequest limit, which Rust
// counts. The node's egress policy is checked in Rust for every hop; its
// refusal becomes a TypeError.
const ERROR_CLASSES = {
  __proto__: null,
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};
const REMOTE_ERROR = new SafeRegExp("^([A-Za-z]*Error): ([\\s\\S]*)$");

// An error from another worker or object (a service binding, a Durable Object
// stub): its exception arrives as "Name: message" and is rethrown with its class
// and message, as Workers does, marked `remote`; limit kills and full queues are
// also marked `overloaded`.
export function fromRemote(e) {
  if (!ObjectPrototypeIsPrototypeOf(Error.prototype, e)) return e;
  const message = e.message;
  const m = typeof message === "string" ? RegExpPrototypeExec(REMOTE_ERROR, message) : null;
  const cls = m !== null ? ERROR_CLASSES[m[1]] : undefined;
  const err = cls !== undefined ? new cls(m[2]) : e;
  ObjectDefineProperty(err, "remote", writable(true));
  if (typeof message === "string" && StringPrototypeIncludes(message, "overloaded")) {
    ObjectDefineProperty(err, "overloaded", writable(true));
  }
  // Cluster failures that can succeed when tried again (an owner node that is
  // down or a peer that timed out), as Workers marks them.
  if (typeof message === "string" && StringPrototypeIncludes(message, "(retryable)")) {
    ObjectDefineProperty(err, "retryable", writable(true));
  }
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

const NOT_GRANTED = new SafeRegExp(
  "^Requires ([\\s\\S]*), which cannot be granted in this environment$",
);
export function rethrowFetchError(e) {
  if (e !== null && typeof e === "object" && e.name === "NotCapable") {
    const m = RegExpPrototypeExec(NOT_GRANTED, e.message);
    throw new TypeError(m !== null ? m[1] : e.message);
  }
  throw e;
}
const denoFetch = fetch.fetch;
// Whether a fetch asks for a WebSocket (`Upgrade: websocket`).
function wantsWebSocket(input, init) {
  let source;
  if (init !== undefined && init !== null && init.headers !== undefined) source = init.headers;
  else if (ObjectPrototypeIsPrototypeOf(request.RequestPrototype, input)) source = input.headers;
  if (source === undefined || source === null) return false;
  const upgrade = new headers.Headers(source).get("upgrade");
  return upgrade !== null && StringPrototypeToLowerCase(upgrade) === "websocket";
}

async function workersFetch(input, init = undefined) {
  if (wantsWebSocket(input, init)) {
    // An outbound WebSocket: Rust counts the subrequest and checks egress.
    const req = new request.Request(input, init);
    if (outputGate !== null) await outputGate();
    const flat = [];
    for (const { 0: name, 1: value } of req.headers) ArrayPrototypePush(flat, name, value);
    return await websocket.connect(req.url, flat);
  }
  op_edged_subrequest("fetch()");
  if (outputGate !== null) await outputGate();
  try {
    return await denoFetch(input, init);
  } catch (e) {
    rethrowFetchError(e);
  }
}
ObjectDefineProperty(workersFetch, "name", { value: "fetch" });

// Timers belong to the request that started them (Rust records it): a timer
// whose request has ended does not run, and the runtime cancels the timers a
// request leaves behind when it ends (clearTimers). deno's timers keep the
// request context of the code that set them, so these checks run for the
// right request. Called unbound: deno's timers reject another receiver.
const rawSetTimeout = timers.setTimeout;
const rawSetInterval = timers.setInterval;
const rawClearTimeout = timers.clearTimeout;

function timerCallback(api, callback) {
  if (typeof callback !== "function") {
    throw new TypeError(
      `Failed to execute '${api}' on 'ServiceWorkerGlobalScope': parameter 1 is not of type 'Function'.`,
    );
  }
}
function setTimeout(callback, delay = 0, ...args) {
  timerCallback("setTimeout", callback);
  let id = 0;
  id = ReflectApply(rawSetTimeout, undefined, [function () {
    if (!op_edged_timer_fire(id, false)) return;
    ReflectApply(callback, globalThis, args);
  }, delay]);
  if (!op_edged_timer_start(id)) rawClearTimeout(id);
  return id;
}
function setInterval(callback, delay = 0, ...args) {
  timerCallback("setInterval", callback);
  let id = 0;
  id = ReflectApply(rawSetInterval, undefined, [function () {
    if (!op_edged_timer_fire(id, true)) {
      rawClearTimeout(id);
      return;
    }
    ReflectApply(callback, globalThis, args);
  }, delay]);
  if (!op_edged_timer_start(id)) rawClearTimeout(id);
  return id;
}
function clearTimeout(id = undefined) {
  if (typeof id === "number" && id >= 0 && id <= 0xffffffff) op_edged_timer_clear(id >>> 0);
  ReflectApply(rawClearTimeout, undefined, [id]);
}
ObjectDefineProperty(setTimeout, "name", { value: "setTimeout" });
ObjectDefineProperty(setInterval, "name", { value: "setInterval" });
ObjectDefineProperty(clearTimeout, "name", { value: "clearTimeout" });
const clearInterval = function clearInterval(id = undefined) {
  clearTimeout(id);
};

// Called by Rust (through the isolate's internals) with the timers of
// requests that ended.
export function clearTimers(ids) {
  for (let i = 0; i < ids.length; i++) ReflectApply(rawClearTimeout, undefined, [ids[i]]);
}

// scheduler.wait(ms): a promise-based timer, as in Workers.
const scheduler = ObjectFreeze({
  __proto__: null,
  wait(ms, options = undefined) {
    const signal = options?.signal;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Number(ms) || 0);
      function onAbort() {
        clearTimeout(timer);
        reject(signal.reason);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
});

// Time as in Workers: Date.now(), new Date() and performance.now() (its op is
// replaced in Rust) stand still while a request's code runs and advance across
// I/O (src/js/clock.rs). The intrinsic Date stays reachable to nobody but this
// wrapper, which shares its prototype, so instanceof and subclassing behave.
function Date(...args) {
  if (new.target === undefined) {
    return DatePrototypeToString(new IntrinsicDate(op_edged_date_now()));
  }
  return args.length === 0
    ? ReflectConstruct(IntrinsicDate, [op_edged_date_now()], new.target)
    : ReflectConstruct(IntrinsicDate, args, new.target);
}
ObjectDefineProperties(Date, {
  length: { value: 7, configurable: true },
  prototype: { value: IntrinsicDate.prototype, writable: false, configurable: false },
  now: writable(function now() {
    return op_edged_date_now();
  }),
  parse: writable(IntrinsicDate.parse),
  UTC: writable(IntrinsicDate.UTC),
});
ObjectDefineProperty(IntrinsicDate.prototype, "constructor", writable(Date));
// Intl formats "now" when given no date: the frozen now, too.
const DateTimeFormatPrototype = globalThis.Intl.DateTimeFormat.prototype;
const formatGetter = ObjectGetOwnPropertyDescriptor(DateTimeFormatPrototype, "format").get;
const boundFormats = new SafeWeakMap();
ObjectDefineProperty(DateTimeFormatPrototype, "format", {
  get() {
    const format = FunctionPrototypeCall(formatGetter, this);
    let bound = WeakMapPrototypeGet(boundFormats, format);
    if (bound === undefined) {
      bound = (date = undefined) => format(date === undefined ? op_edged_date_now() : date);
      WeakMapPrototypeSet(boundFormats, format, bound);
    }
    return bound;
  },
  configurable: true,
  enumerable: false,
});
const formatToParts = DateTimeFormatPrototype.formatToParts;
ObjectDefineProperty(DateTimeFormatPrototype, "formatToParts", writable(function formatToParts_(date = undefined) {
  return FunctionPrototypeCall(formatToParts, this, date === undefined ? op_edged_date_now() : date);
}));
ObjectDefineProperty(DateTimeFormatPrototype.formatToParts, "name", { value: "formatToParts" });

// Log lines are plain text: no terminal colours in inspected values.
setNoColorFns(() => true, () => true);

const console = new Console((msg, level) => {
  // deno's Console ends every message with "\n"; the log adds its own.
  const text = StringPrototypeEndsWith(msg, "\n") ? StringPrototypeSlice(msg, 0, -1) : msg;
  op_edged_log(level, text);
});

ObjectDefineProperties(globalThis, {
  // WHATWG URL and URLPattern
  URL: writable(url.URL),
  URLSearchParams: writable(url.URLSearchParams),
  URLPattern: writable(urlPattern.URLPattern),
  // Fetch
  Headers: writable(headers.Headers),
  Request: writable(request.Request),
  Response: writable(websocket.Response),
  WebSocket: writable(websocket.WebSocket),
  WebSocketPair: writable(websocket.WebSocketPair),
  WebSocketRequestResponsePair: writable(websocket.WebSocketRequestResponsePair),
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
  CloseEvent: writable(event.CloseEvent),
  MessageEvent: writable(event.MessageEvent),
  PromiseRejectionEvent: writable(event.PromiseRejectionEvent),
  AbortController: writable(abortSignal.AbortController),
  AbortSignal: writable(abortSignal.AbortSignal),
  DOMException: writable(DOMException),
  MessageChannel: writable(messagePort.MessageChannel),
  MessagePort: writable(messagePort.MessagePort),
  // Timers, cloning, time, performance
  setTimeout: writable(setTimeout),
  setInterval: writable(setInterval),
  clearTimeout: writable(clearTimeout),
  clearInterval: writable(clearInterval),
  scheduler: writable(scheduler),
  structuredClone: writable(messagePort.structuredClone),
  performance: writable(performance.performance),
  Date: writable(Date),
  // Web Crypto
  crypto: readOnly(crypto.crypto),
  Crypto: writable(crypto.Crypto),
  CryptoKey: writable(crypto.CryptoKey),
  SubtleCrypto: writable(crypto.SubtleCrypto),
  // console
  console: writable(console),
  // Workers exposes `self` as the global scope.
  self: { get: () => globalThis, configurable: true, enumerable: true },
  navigator: readOnly(ObjectFreeze({ userAgent: "edged", hardwareConcurrency: 1 })),
});
event.saveGlobalThisReference(globalThis);

// deno_core's async op stubs call each op through `Function.prototype.call`:
// a tenant replacing it would silently stop every async op of its isolate.
// It stays writable nowhere (assigning it throws in a module, as in strict
// code anywhere).
ObjectDefineProperty(primordials.FunctionPrototype, "call", {
  value: primordials.FunctionPrototype.call,
  writable: false,
  enumerable: false,
  configurable: false,
});

// Workers' extension to SubtleCrypto: constant-time comparison of two buffers.
function asView(value, which) {
  const bytes = bytesOf(value);
  if (bytes !== null) return bytes;
  throw new TypeError(
    `Failed to execute 'timingSafeEqual' on 'SubtleCrypto': parameter ${which} is not of type 'ArrayBuffer or ArrayBufferView'.`,
  );
}
// Web Crypto's heavy operations run on blocking threads: their time there is
// charged to the request as CPU (Rust keeps the clock), and PBKDF2 is held to
// Workers' iteration limit and RSA key generation to 4096 bits, so that one
// call cannot hold a core for seconds. The algorithm is copied before it is
// checked, so what is checked is what deno receives.
const SubtleCryptoPrototype = crypto.SubtleCrypto.prototype;
const MAX_PBKDF2_ITERATIONS = 100000;
const MAX_RSA_BITS = 4096;
function checkedAlgorithm(method, algorithm) {
  if (algorithm === null || typeof algorithm !== "object") return algorithm;
  const copy = { ...algorithm };
  const name = typeof copy.name === "string" ? StringPrototypeToUpperCase(copy.name) : "";
  if ((method === "deriveBits" || method === "deriveKey") && name === "PBKDF2") {
    const iterations = Number(copy.iterations);
    if (iterations > MAX_PBKDF2_ITERATIONS) {
      throw new DOMException(
        `Pbkdf2 failed: iteration counts above ${MAX_PBKDF2_ITERATIONS} are not supported (requested ${iterations}).`,
        "NotSupportedError",
      );
    }
    copy.iterations = iterations;
  }
  if (method === "generateKey" && StringPrototypeStartsWith(name, "RSA")) {
    const bits = Number(copy.modulusLength);
    if (bits > MAX_RSA_BITS) {
      throw new DOMException(
        `RSA key generation is limited to ${MAX_RSA_BITS} bits (requested ${bits}).`,
        "NotSupportedError",
      );
    }
    copy.modulusLength = bits;
  }
  return copy;
}
const OFF_THREAD = ["encrypt", "decrypt", "sign", "verify", "digest", "generateKey", "deriveKey", "deriveBits"];
for (let i = 0; i < OFF_THREAD.length; i++) {
  const method = OFF_THREAD[i];
  const original = SubtleCryptoPrototype[method];
  const wrapped = {
    async [method](algorithm, ...rest) {
      const checked = checkedAlgorithm(method, algorithm);
      const token = op_edged_offthread_begin();
      try {
        return await ReflectApply(original, this, [checked, ...rest]);
      } finally {
        op_edged_offthread_end(token);
      }
    },
  }[method];
  ObjectDefineProperty(wrapped, "length", { value: original.length });
  ObjectDefineProperty(SubtleCryptoPrototype, method, writable(wrapped));
}

ObjectDefineProperty(crypto.SubtleCrypto.prototype, "timingSafeEqual", {
  value: function timingSafeEqual(a, b) {
    const x = asView(a, 1);
    const y = asView(b, 2);
    if (TypedArrayPrototypeGetByteLength(x) !== TypedArrayPrototypeGetByteLength(y)) {
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
