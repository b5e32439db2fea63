// node:process — the process object the vendored polyfills share
// (scripts/node-vendor/process.cjs), with `env` holding the worker's text
// bindings (vars and secrets) when `nodejs_compat_populate_process_env` is on,
// as Workers fills it.
import process from "./process.js";

const m = globalThis.__edged_cloudflare_workers;
if (m?.node === undefined) {
  throw new Error("node:process can only be imported while a worker's modules first evaluate");
}
if (m.node.processEnv) {
  for (const [name, value] of Object.entries(m.env)) {
    if (typeof value === "string") process.env[name] = value;
  }
}

export * from "./process.js";
export default process;
