// The globals `nodejs_compat_v2` adds: Buffer, process, global, and the
// immediate timers. Evaluated before the worker's main module.
import { Buffer } from "./buffer.js";
import process from "./process_node.js";
import { setImmediate, clearImmediate } from "./timers.js";

for (const [name, value] of [
  ["Buffer", Buffer],
  ["process", process],
  ["global", globalThis],
  ["setImmediate", setImmediate],
  ["clearImmediate", clearImmediate],
]) {
  if (!Object.hasOwn(globalThis, name)) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }
}
