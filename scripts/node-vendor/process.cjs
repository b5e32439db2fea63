// The `process` object the vendored polyfills share with `node:process`
// (src/js/node/process.js completes it: env from the worker's bindings).
// Values as Workers reports them.
"use strict";
function nextTick(callback, ...args) {
  if (typeof callback !== "function") {
    throw new TypeError('The "callback" argument must be of type function');
  }
  queueMicrotask(() => callback(...args));
}
const process = {
  env: {},
  argv: [],
  argv0: "",
  execArgv: [],
  version: "v22.14.0",
  versions: { node: "22.14.0" },
  platform: "linux",
  arch: "x64",
  title: "workerd",
  pid: 1,
  ppid: 0,
  release: { name: "node" },
  exitCode: undefined,
  browser: false,
  features: {},
  nextTick,
  cwd() {
    return "/bundle";
  },
  chdir() {
    throw new Error("process.chdir() is not supported");
  },
  umask() {
    return 0o22;
  },
  emitWarning(warning) {
    console.warn(typeof warning === "string" ? `Warning: ${warning}` : warning);
  },
  hrtime: Object.assign(
    function hrtime(previous) {
      const now = performance.now();
      let seconds = Math.floor(now / 1000);
      let nanos = Math.floor((now % 1000) * 1e6);
      if (previous) {
        seconds -= previous[0];
        nanos -= previous[1];
        if (nanos < 0) {
          seconds -= 1;
          nanos += 1e9;
        }
      }
      return [seconds, nanos];
    },
    {
      bigint() {
        return BigInt(Math.floor(performance.now() * 1e6));
      },
    },
  ),
  uptime() {
    return performance.now() / 1000;
  },
  memoryUsage() {
    return { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
  },
  getBuiltinModule() {
    return undefined;
  },
  exit() {
    throw new Error("process.exit() is not supported");
  },
  abort() {
    throw new Error("process.abort() is not supported");
  },
  // The EventEmitter methods real code calls on process; no event ever fires.
  on() {
    return process;
  },
  once() {
    return process;
  },
  off() {
    return process;
  },
  addListener() {
    return process;
  },
  removeListener() {
    return process;
  },
  removeAllListeners() {
    return process;
  },
  emit() {
    return false;
  },
  listeners() {
    return [];
  },
  listenerCount() {
    return 0;
  },
};
module.exports = process;
