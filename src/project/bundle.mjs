// The bundler `edged deploy <dir>` runs with Node.js: esbuild's JS API with
// wrangler's settings and its module rules as a plugin. Reads one JSON
// request on stdin, writes one JSON answer on stdout:
//   request: {projectDir, baseDir, entry, rules: [{type, globs}], define,
//             alias, minify, keepNames, jsxFactory, jsxFragment, tsconfig,
//             nodeModules: the node built-ins the worker may import}
//   answer:  {main: {name, code}, modules: [{name, type, file}]} or {error}
// esbuild comes from the project (wrangler depends on it, so a project with
// wrangler installed has it) or from $EDGED_ESBUILD_PATH.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

function fail(message) {
  process.stdout.write(JSON.stringify({ error: message }));
  process.exit(1);
}

async function loadEsbuild(projectDir) {
  const places = [path.join(projectDir, "package.json")];
  if (process.env.EDGED_ESBUILD_PATH) {
    places.push(path.join(process.env.EDGED_ESBUILD_PATH, "package.json"));
    places.push(path.join(process.env.EDGED_ESBUILD_PATH, "noop.js"));
  }
  for (const place of places) {
    try {
      const resolved = createRequire(place).resolve("esbuild");
      const mod = await import(pathToFileURL(resolved).href);
      return mod.default ?? mod;
    } catch {
      // try the next place
    }
  }
  fail(
    "esbuild is not installed: run `npm install --save-dev esbuild` in the project " +
      "(wrangler projects have it through wrangler), or set EDGED_ESBUILD_PATH to a " +
      "directory whose node_modules holds it",
  );
}

// wrangler's glob syntax: `**/` any directories, `*` within a name, `?` one character.
function globToRegExp(glob) {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*" && glob[i + 2] === "/") {
      re += "(?:.*/)?";
      i += 2;
    } else if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i += 1;
    } else if (c === "*") {
      re += "[^/]*";
    } else if (c === "?") {
      re += ".";
    } else {
      re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return re;
}

const input = JSON.parse(readFileSync(0, "utf8"));
const esbuild = await loadEsbuild(input.projectDir);
// An import path matches a glob by its end: `**/*.wasm` matches "./a.wasm".
const rules = input.rules.flatMap((r) =>
  r.globs.map((glob) => ({
    type: r.type,
    re: new RegExp("(?:^|/)" + globToRegExp(glob.replace(/^(\*\*\/)+/, "")) + "$"),
  })),
);
const modules = new Map();

const moduleRules = {
  name: "edged-module-rules",
  setup(build) {
    if (rules.length === 0) return;
    const filter = new RegExp(rules.map((r) => r.re.source).join("|"));
    build.onResolve({ filter }, async (args) => {
      if (args.pluginData?.edgedInner) return undefined;
      const clean = args.path.replace(/\?module$/, "");
      const rule = rules.find((r) => r.re.test(args.path) || r.re.test(clean));
      if (!rule) return undefined;
      const resolved = await build.resolve(clean, {
        kind: args.kind,
        resolveDir: args.resolveDir,
        importer: args.importer,
        pluginData: { edgedInner: true },
      });
      if (resolved.errors.length > 0) return { errors: resolved.errors };
      const bytes = readFileSync(resolved.path);
      const hash = createHash("sha1").update(bytes).digest("hex");
      const name = `${hash}-${path.basename(resolved.path)}`;
      modules.set(name, { name, type: rule.type, file: resolved.path });
      return { path: "./" + name, external: true };
    });
  },
};

// With nodejs_compat, as wrangler does: Node's built-ins stay imports of
// `node:<name>` for the runtime, and a require() of one (which esbuild's ESM
// output cannot leave external) becomes a module importing it.
const nodeBuiltins = {
  name: "edged-node-builtins",
  setup(build) {
    const names = (input.nodeModules ?? []).map((n) => n.replace(/[/]/g, "\\/"));
    if (names.length === 0) return;
    const filter = new RegExp(`^(node:)?(${names.join("|")})$`);
    build.onResolve({ filter }, (args) => {
      const name = args.path.startsWith("node:") ? args.path : `node:${args.path}`;
      if (args.kind === "require-call") return { path: name, namespace: "edged-node-require" };
      return { path: name, external: true };
    });
    build.onLoad({ filter: /.*/, namespace: "edged-node-require" }, (args) => ({
      contents: `import lib from ${JSON.stringify(args.path)};\nmodule.exports = lib;\n`,
      loader: "js",
    }));
  },
};

try {
  const result = await esbuild.build({
    absWorkingDir: input.projectDir,
    entryPoints: [input.entry],
    bundle: true,
    write: false,
    outdir: path.join(input.projectDir, ".edged-bundle"),
    format: "esm",
    target: "es2022",
    platform: "browser",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["browser", "module", "main"],
    external: ["cloudflare:*", "node:*"],
    loader: { ".js": "jsx", ".mjs": "jsx", ".cjs": "jsx" },
    define: { "process.env.NODE_ENV": '"production"', ...(input.define ?? {}) },
    alias: input.alias ?? {},
    minify: input.minify === true,
    keepNames: input.keepNames !== false,
    jsxFactory: input.jsxFactory ?? undefined,
    jsxFragment: input.jsxFragment ?? undefined,
    tsconfig: input.tsconfig ?? undefined,
    plugins: [nodeBuiltins, moduleRules],
    logLevel: "silent",
  });
  const js = result.outputFiles.find((f) => f.path.endsWith(".js"));
  if (!js) fail("esbuild produced no JavaScript");
  const warnings = await esbuild.formatMessages(result.warnings, { kind: "warning" });
  process.stdout.write(
    JSON.stringify({
      main: { name: path.basename(js.path), code: js.text },
      modules: [...modules.values()],
      warnings,
    }),
  );
} catch (e) {
  if (Array.isArray(e.errors) && e.errors.length > 0) {
    const text = await esbuild.formatMessages(e.errors, { kind: "error" });
    fail(text.join("\n"));
  }
  fail(String(e?.message ?? e));
}
