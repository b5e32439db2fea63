//! `edged deploy <dir>`: real Wrangler-shaped projects bundled with esbuild
//! (the pinned one from `scripts/setup-esbuild.sh`, found through
//! `EDGED_ESBUILD_PATH`) and deployed to a real node, checked through the
//! data plane.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestNode, TOKEN};
use serde_json::Value;

fn write(dir: &Path, rel: &str, content: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Runs `edged deploy <dir> [args]` against the node: (success, stdout, stderr).
fn deploy(node: &TestNode, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("deploy")
        .arg(dir)
        .args(args)
        .args(["--control", &node.control, "--token", TOKEN])
        .output()
        .expect("run edged deploy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(i32, i32) -> i32` exported as `add`.
const ADD_WASM: [u8; 41] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64, 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

/// A TypeScript project with an npm dependency (a package in
/// node_modules with a `workerd` export condition), JSX, module rules for
/// wasm/text/data, KV, a Durable Object, vars, version metadata and an
/// `[env.staging]` section, in wrangler.toml.
fn typescript_project(dir: &Path) {
    write(
        dir,
        "wrangler.toml",
        br#"
name = "shop"
main = "src/index.ts"
compatibility_date = "2025-01-01"
workers_dev = true
account_id = "0123456789abcdef"

[vars]
STAGE = "production"

[[kv_namespaces]]
binding = "CACHE"
id = "prod-cache"

[env.staging]
route = "staging.example.com/*"

[env.staging.vars]
STAGE = "staging"
LIMITS = { max = 3 }

[[env.staging.kv_namespaces]]
binding = "CACHE"
id = "staging-cache"

[[env.staging.durable_objects.bindings]]
name = "COUNTER"
class_name = "Counter"

[env.staging.version_metadata]
binding = "VERSION"
"#,
    );
    write(
        dir,
        "src/index.ts",
        br#"
import { DurableObject } from "cloudflare:workers";
import { route } from "tiny-router";
import { greet } from "./greet";
import add from "./math/add.wasm";
import banner from "../static/banner.txt";
import blob from "./blob.bin";

interface Env {
  STAGE: string;
  LIMITS: { max: number };
  CACHE: KVNamespace;
  COUNTER: DurableObjectNamespace;
  VERSION: { id: string };
}

export class Counter extends DurableObject {
  async fetch(): Promise<Response> {
    const n: number = ((await this.ctx.storage.get<number>("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", n);
    return new Response(String(n));
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/count") {
      return env.COUNTER.get(env.COUNTER.idFromName("a")).fetch(request);
    }
    await env.CACHE.put("k", "v");
    const { exports } = await WebAssembly.instantiate(add, {});
    return Response.json({
      stage: env.STAGE,
      max: env.LIMITS?.max ?? null,
      router: route(url.pathname),
      greet: greet("edged"),
      sum: (exports.add as (a: number, b: number) => number)(40, 2),
      banner: banner.trim(),
      blob: new Uint8Array(blob).length,
      kv: await env.CACHE.get("k"),
      hasVersion: typeof env.VERSION?.id === "string",
    });
  },
};
"#,
    );
    write(
        dir,
        "src/greet.tsx",
        br#"
const h = (tag: string, _props: unknown, ...children: string[]) => `<${tag}>${children.join("")}</${tag}>`;
export const greet = (name: string): string => <b>hello {name}</b>;
"#,
    );
    write(dir, "src/math/add.wasm", &ADD_WASM);
    write(dir, "static/banner.txt", b"  welcome  \n");
    write(dir, "src/blob.bin", &[1, 2, 3, 4, 5]);
    write(
        dir,
        "node_modules/tiny-router/package.json",
        br#"{"name":"tiny-router","version":"1.0.0","exports":{".":{"workerd":"./workerd.js","node":"./node.js","default":"./node.js"}}}"#,
    );
    write(
        dir,
        "node_modules/tiny-router/workerd.js",
        b"export function route(p) { return 'workerd:' + p; }\n",
    );
    write(
        dir,
        "node_modules/tiny-router/node.js",
        b"import fs from 'fs'; export function route(p) { return 'node:' + p; }\n",
    );
    write(
        dir,
        "tsconfig.json",
        br#"{"compilerOptions":{"jsx":"react","jsxFactory":"h","strict":true}}"#,
    );
}

#[test]
fn a_typescript_project_deploys_with_its_environment() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    typescript_project(dir);

    // The top level: no Durable Object bound there, so the worker's
    // /count path is not used; the staging environment binds one.
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("deployed shop version 1"), "{stdout}");
    assert!(
        stderr.contains("'workers_dev' is ignored") && stderr.contains("'account_id' is ignored"),
        "ignored keys are named: {stderr}"
    );
    let (status, body) = node.get_worker("shop", "/x");
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["stage"], "production");
    assert_eq!(got["max"], Value::Null, "vars are not inherited by an env");
    assert_eq!(got["router"], "workerd:/x", "the workerd export condition");
    assert_eq!(
        got["greet"], "<b>hello edged</b>",
        "TSX with the tsconfig's factory"
    );
    assert_eq!(got["sum"], 42);
    assert_eq!(got["banner"], "welcome");
    assert_eq!(got["blob"], 5);
    assert_eq!(got["kv"], "v");
    assert_eq!(got["hasVersion"], false);

    let (ok, stdout, stderr) = deploy(&node, dir, &["--env", "staging"]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("deployed shop-staging version 1"),
        "{stdout}"
    );
    let (status, body) = node.get("staging.example.com", "/y");
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["stage"], "staging");
    assert_eq!(got["max"], 3, "a table var is a JSON binding");
    assert_eq!(got["hasVersion"], true);
    for want in ["1", "2"] {
        assert_eq!(
            node.get("staging.example.com", "/count"),
            (200, want.to_owned())
        );
    }
    // Each environment has its own KV namespace.
    let (_, list) = node.control_request(reqwest::Method::GET, "/v1/kv/staging-cache/keys", None);
    assert!(list.to_string().contains("\"k\""), "{list}");

    let (ok, _, stderr) = deploy(&node, dir, &["--env", "prod"]);
    assert!(!ok);
    assert!(
        stderr.contains("no environment 'prod' (environments: staging)"),
        "{stderr}"
    );
}

#[test]
fn projects_with_what_edged_lacks_are_refused_clearly() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let worker = b"export default { fetch() { return new Response('ok'); } };\n";
    write(dir, "src/index.js", worker);

    // A binding edged does not have: refused, naming it.
    write(
        dir,
        "wrangler.jsonc",
        br#"{
  // JSON with comments and trailing commas, as wrangler reads it
  "name": "lacks",
  "main": "src/index.js",
  "r2_buckets": [{ "binding": "B", "bucket_name": "b" }],
}"#,
    );
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(stderr.contains("'r2_buckets'"), "{stderr}");

    // An unknown key is a warning naming it; the worker deploys.
    write(
        dir,
        "wrangler.jsonc",
        br#"{ "name": "lacks", "main": "src/index.js", "flux_capacitor": true, }"#,
    );
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stderr.contains("unknown key 'flux_capacitor'"), "{stderr}");
    assert_eq!(node.get_worker("lacks", "/"), (200, "ok".to_owned()));

    // A flag workerd does not know: the node's 400, and the old version serves.
    write(
        dir,
        "wrangler.jsonc",
        br#"{ "name": "lacks", "main": "src/index.js", "compatibility_flags": ["warp_drive"] }"#,
    );
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("No such compatibility flag: warp_drive"),
        "{stderr}"
    );

    // A type error in the source: esbuild's message with its location.
    write(
        dir,
        "wrangler.jsonc",
        br#"{ "name": "lacks", "main": "src/broken.ts" }"#,
    );
    write(dir, "src/broken.ts", b"export default { fetch( { };\n");
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(stderr.contains("src/broken.ts:1:"), "{stderr}");

    // A node: module edged does not implement: refused at deploy, named.
    write(
        dir,
        "wrangler.jsonc",
        br#"{ "name": "lacks", "main": "src/node.js" }"#,
    );
    write(
        dir,
        "src/node.js",
        b"import { Buffer } from 'node:buffer'; export default { fetch() { return new Response(Buffer.from('x')); } };\n",
    );
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(stderr.contains("node:buffer"), "{stderr}");
    assert_eq!(node.get_worker("lacks", "/"), (200, "ok".to_owned()));

    // no_bundle: the files as they are, picked by the rules.
    write(
        dir,
        "wrangler.toml",
        b"name = \"plain\"\nmain = \"src/main.mjs\"\nno_bundle = true\nrules = [{ type = \"Text\", globs = [\"**/*.md\"] }]\n",
    );
    std::fs::remove_file(dir.join("wrangler.jsonc")).expect("rm");
    write(
        dir,
        "src/main.mjs",
        b"import doc from './README.md'; import { n } from './lib/n.js'; export default { fetch() { return new Response(doc + n); } };\n",
    );
    write(dir, "src/README.md", b"# doc ");
    write(dir, "src/lib/n.js", b"export const n = 7;\n");
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(node.get_worker("plain", "/"), (200, "# doc 7".to_owned()));
}
