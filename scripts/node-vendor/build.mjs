// Builds src/js/node/vendor/ from the pinned npm packages of package.json:
// one ES module per vendored `node:` module, shared code split into chunks
// (esbuild's code splitting), so `node:buffer` and the `Buffer` inside
// `node:stream` are one class. The named exports of each module are the
// package's own keys, listed here by loading it under Node.js. Run through
// scripts/vendor-node.sh; the output is committed and embedded by
// src/js/node.rs (files.rs lists it).
import { createRequire } from "node:module";
import { mkdirSync, rmSync, writeFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "package.json"));
const out = path.resolve(here, "../../src/js/node/vendor");
const entries = path.join(here, ".entries");

// public name → [package, extra ES source appended to the entry]
const MODULES = {
  buffer: ["buffer", `
// Node's "base64url" encoding, which buffer 6 lacks (its base64 decoder
// already reads the URL alphabet and missing padding).
{
  const B = m.Buffer;
  const isUrl = (e) => typeof e === "string" && e.toLowerCase() === "base64url";
  const toUrl = (s) => s.replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const { toString, write } = B.prototype;
  const { from, byteLength, isEncoding, alloc } = B;
  B.prototype.toString = function (encoding, start, end) {
    return isUrl(encoding) ? toUrl(toString.call(this, "base64", start, end)) : toString.apply(this, arguments);
  };
  B.prototype.write = function (string, offset, length, encoding) {
    if (isUrl(offset)) return write.call(this, string, "base64");
    if (isUrl(length)) return write.call(this, string, offset, "base64");
    if (isUrl(encoding)) return write.call(this, string, offset, length, "base64");
    return write.apply(this, arguments);
  };
  B.from = function (value, encoding, length) {
    return isUrl(encoding) ? from.call(B, value, "base64") : from.apply(B, arguments);
  };
  B.byteLength = function (string, encoding) {
    return isUrl(encoding) ? byteLength.call(B, string, "base64") : byteLength.apply(B, arguments);
  };
  B.isEncoding = function (encoding) {
    return isUrl(encoding) || isEncoding.call(B, encoding);
  };
  B.alloc = function (size, fill, encoding) {
    return isUrl(encoding) ? alloc.call(B, size, fill, "base64") : alloc.apply(B, arguments);
  };
}
export const atob = globalThis.atob;
export const btoa = globalThis.btoa;
export const Blob = globalThis.Blob;
export const File = globalThis.File;
export const constants = { MAX_LENGTH: m.kMaxLength, MAX_STRING_LENGTH: 536870888 };
export const kStringMaxLength = 536870888;
`],
  events: ["events", ""],
  path: ["path-browserify", ""],
  util: ["util", `
export const TextEncoder = globalThis.TextEncoder;
export const TextDecoder = globalThis.TextDecoder;
`],
  string_decoder: ["string_decoder", ""],
  assert: ["assert", ""],
  url: ["url", `
export const URL = globalThis.URL;
export const URLSearchParams = globalThis.URLSearchParams;
export function fileURLToPath(url) {
  const u = typeof url === "string" ? new URL(url) : url;
  if (u.protocol !== "file:") throw new TypeError("The URL must be of scheme file");
  return decodeURIComponent(u.pathname);
}
export function pathToFileURL(p) {
  const u = new URL("file://");
  u.pathname = String(p);
  return u;
}
export function domainToASCII(domain) {
  try { return new URL("http://" + domain).hostname; } catch { return ""; }
}
export function domainToUnicode(domain) {
  return m.domainToUnicode ? m.domainToUnicode(domain) : String(domain);
}
`],
  stream: ["readable-stream", ""],
  process: [path.join(here, "process.cjs"), ""],
};

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
rmSync(entries, { recursive: true, force: true });
mkdirSync(entries, { recursive: true });
const entryPoints = {};
for (const [name, [pkg, extra]] of Object.entries(MODULES)) {
  // "buffer/" (not "buffer"): under Node.js a bare name is its built-in.
  const value = require(path.isAbsolute(pkg) ? pkg : `${pkg}/`);
  const declared = new Set([...extra.matchAll(/export (?:const|function) (\w+)/g)].map((x) => x[1]));
  const keys = Object.keys(value).filter((k) => IDENT.test(k) && k !== "default" && !declared.has(k));
  // The default export is what require() returns: the package's exports,
  // plus the names added here.
  const added = [...declared];
  const src = `import m from ${JSON.stringify(pkg)};\n` +
    (keys.length ? `export const { ${keys.join(", ")} } = m;\n` : "") + extra +
    (added.length ? `export default { ...m, ${added.join(", ")} };\n` : "export default m;\n");
  const file = path.join(entries, `${name}.js`);
  writeFileSync(file, src);
  entryPoints[name] = file;
}

// The polyfills reach each other (and `process`) as npm packages; these
// all resolve to the one copy bundled here.
const shared = {
  name: "edged-shared",
  setup(build) {
    const map = {
      process: path.join(here, "process.cjs"),
      buffer: require.resolve("buffer/"),
      events: require.resolve("events/"),
      util: require.resolve("util/"),
      "safe-buffer": require.resolve("buffer/"),
    };
    build.onResolve({ filter: /^(process|buffer|events|util|safe-buffer)\/?$/ }, (args) => ({
      path: map[args.path.replace(/\/$/, "")],
    }));
  },
};

rmSync(out, { recursive: true, force: true });
await esbuild.build({
  entryPoints,
  outdir: out,
  bundle: true,
  splitting: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  chunkNames: "chunk-[hash]",
  legalComments: "inline",
  logLevel: "warning",
  plugins: [shared],
});
rmSync(entries, { recursive: true, force: true });

const files = readdirSync(out).filter((f) => f.endsWith(".js")).sort();
const rs = "// Generated by scripts/node-vendor/build.mjs: do not edit.\n" +
  "pub static FILES: &[(&str, &str)] = &[\n" +
  files.map((f) => `    (${JSON.stringify(f)}, include_str!(${JSON.stringify(f)})),\n`).join("") +
  "];\n";
writeFileSync(path.join(out, "files.rs"), rs);
console.log(`wrote ${files.length} files to ${out}`);
