import {
  require_process
} from "./chunk-7WWTGOJI.js";
import {
  __toESM
} from "./chunk-TRTQSARU.js";

// .entries/process.js
var import_process = __toESM(require_process());
var { env, argv, argv0, execArgv, version, versions, platform, arch, title, pid, ppid, release, exitCode, browser, features, nextTick, cwd, chdir, umask, emitWarning, hrtime, uptime, memoryUsage, getBuiltinModule, exit, abort, on, once, off, addListener, removeListener, removeAllListeners, emit, listeners, listenerCount } = import_process.default;
var process_default = import_process.default;
export {
  abort,
  addListener,
  arch,
  argv,
  argv0,
  browser,
  chdir,
  cwd,
  process_default as default,
  emit,
  emitWarning,
  env,
  execArgv,
  exit,
  exitCode,
  features,
  getBuiltinModule,
  hrtime,
  listenerCount,
  listeners,
  memoryUsage,
  nextTick,
  off,
  on,
  once,
  pid,
  platform,
  ppid,
  release,
  removeAllListeners,
  removeListener,
  title,
  umask,
  uptime,
  version,
  versions
};
