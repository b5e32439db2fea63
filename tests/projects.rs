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

/// A request with headers: (status, headers, body).
fn fetch(
    node: &TestNode,
    method: reqwest::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = node
        .http
        .request(method, format!("{}{path}", node.data))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().expect("body").to_vec())
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn static_assets_are_served_before_the_worker_as_workers_serves_them() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(
        dir,
        "wrangler.jsonc",
        br#"{
  "name": "site",
  "main": "src/worker.js",
  "assets": {
    "directory": "public",
    "binding": "ASSETS",
    "not_found_handling": "single-page-application",
    "run_worker_first": ["/api/*"]
  }
}"#,
    );
    write(
        dir,
        "src/worker.js",
        br#"export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname.startsWith("/api/")) {
      const about = await env.ASSETS.fetch(new URL("/about", request.url));
      const none = await env.ASSETS.fetch(new URL("/no/such/thing", request.url));
      return Response.json({ api: url.pathname, about: await about.text(), fallback: (await none.text()).trim() });
    }
    return new Response("worker " + request.method + " " + url.pathname);
  },
};"#,
    );
    write(dir, "public/index.html", b"<h1>home</h1>\n");
    write(dir, "public/about.html", b"<h1>about</h1>");
    write(dir, "public/blog/index.html", b"<h1>blog</h1>");
    let app_js: Vec<u8> = (0..20 * 1024).map(|i| b"abcdefghij"[i % 10]).collect();
    write(dir, "public/app.js", &app_js);
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    write(dir, "public/big.bin", &big);
    write(dir, "public/secret.key", b"do not serve");
    write(dir, "public/api/guarded.txt", b"guarded by the worker");
    write(dir, "public/.assetsignore", b"# keys stay home\n*.key\n");

    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("6 distinct files, 6 uploaded"), "{stderr}");
    let host = "site.workers.localhost";
    let get = |path: &str, headers: &[(&str, &str)]| {
        fetch(&node, reqwest::Method::GET, host, path, headers)
    };

    let (status, h, body) = get("/", &[]);
    assert_eq!((status, body.as_slice()), (200, &b"<h1>home</h1>\n"[..]));
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(
        header(&h, "cache-control"),
        "public, max-age=0, must-revalidate"
    );
    let etag = header(&h, "etag");
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    assert_eq!(get("/about", &[]).2, b"<h1>about</h1>");
    for (path, to) in [
        ("/about.html", "/about"),
        ("/blog", "/blog/"),
        ("/index.html", "/"),
        ("/blog?x=1", "/blog/?x=1"),
    ] {
        // The test client follows redirects: ask with one that does not.
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let resp = client
            .get(format!("{}{path}", node.data))
            .header("host", host)
            .send()
            .expect("request");
        assert_eq!(resp.status().as_u16(), 307, "{path}");
        assert_eq!(header(resp.headers(), "location"), to, "{path}");
    }
    assert_eq!(get("/blog/", &[]).2, b"<h1>blog</h1>");

    // Conditional and range requests, HEAD.
    let (status, h, body) = get("/", &[("if-none-match", &etag)]);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&h, "etag"), etag);
    let (status, h, body) = get("/app.js", &[("range", "bytes=10-19")]);
    assert_eq!(status, 206);
    assert_eq!(header(&h, "content-range"), "bytes 10-19/20480");
    assert_eq!(body, &app_js[10..20]);
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    let (status, h, _) = get("/app.js", &[("range", "bytes=99999-")]);
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), "bytes */20480");
    let (status, h, body) = fetch(&node, reqwest::Method::HEAD, host, "/app.js", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), "20480");
    assert!(body.is_empty());
    let (status, _, body) = get("/big.bin", &[]);
    assert_eq!(status, 200);
    assert!(body == big, "a streamed 3 MiB file arrives whole");

    // Misses: a navigation gets the SPA's index.html, anything else the worker.
    let (status, _, body) = get("/dashboard/settings", &[("sec-fetch-mode", "navigate")]);
    assert_eq!((status, body.as_slice()), (200, &b"<h1>home</h1>\n"[..]));
    let (status, _, body) = get("/dashboard/settings", &[("sec-fetch-mode", "cors")]);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"worker GET /dashboard/settings"[..])
    );
    assert_eq!(
        get("/secret.key", &[("sec-fetch-mode", "cors")]).2,
        b"worker GET /secret.key",
        ".assetsignore leaves files out"
    );
    let (_, _, body) = fetch(&node, reqwest::Method::POST, host, "/about", &[]);
    assert_eq!(body, b"worker POST /about", "a POST goes to the worker");
    // run_worker_first, and env.ASSETS with the SPA fallback.
    let (status, _, body) = get("/api/x", &[]);
    assert_eq!(status, 200);
    let got: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(got["api"], "/api/x");
    assert_eq!(got["about"], "<h1>about</h1>");
    assert_eq!(got["fallback"], "<h1>home</h1>");

    // run_worker_first is decided on the decoded path: percent-encoding
    // does not skip the worker to reach an asset it guards.
    for path in [
        "/api/guarded.txt",
        "/%61pi/guarded.txt",
        "/api%2Fguarded.txt",
    ] {
        let (_, _, body) = get(path, &[]);
        assert!(!body.starts_with(b"guarded"), "{path} reached the asset");
    }
    // A redeploy uploads only what changed.
    write(dir, "public/about.html", b"<h1>about v2</h1>");
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("6 distinct files, 1 uploaded, 5 already on the node"),
        "{stderr}"
    );
    assert_eq!(get("/about", &[]).2, b"<h1>about v2</h1>");
    let (_, detail) = node.control_request(reqwest::Method::GET, "/v1/workers/site", None);
    assert_eq!(detail["assets"]["files"], 6, "{detail}");
    assert_eq!(
        detail["assets"]["not_found_handling"],
        "single-page-application"
    );
    let metrics = node.metrics();
    assert!(
        TestNode::metric_in(&metrics, "edged_asset_responses_total").unwrap_or(0.0) >= 10.0,
        "{metrics}"
    );
}

#[test]
fn an_assets_only_project_and_the_deploy_api_checks() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(
        dir,
        "wrangler.toml",
        b"name = \"docs\"\ncompatibility_date = \"2025-04-01\"\n\n[assets]\ndirectory = \"./dist\"\nnot_found_handling = \"404-page\"\nhtml_handling = \"drop-trailing-slash\"\n",
    );
    write(dir, "dist/index.html", b"root");
    write(dir, "dist/guide/index.html", b"guide");
    write(dir, "dist/404.html", b"top 404");
    write(dir, "dist/guide/404.html", b"guide 404");
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(node.get_worker("docs", "/guide"), (200, "guide".to_owned()));
    assert_eq!(
        node.get_worker("docs", "/guide/missing"),
        (404, "guide 404".to_owned())
    );
    assert_eq!(
        node.get_worker("docs", "/elsewhere"),
        (404, "top 404".to_owned())
    );
    let (status, _, _) = fetch(
        &node,
        reqwest::Method::POST,
        "docs.workers.localhost",
        "/",
        &[],
    );
    assert_eq!(
        status, 405,
        "an assets-only project answers only GET and HEAD"
    );

    // The deploy API checks the manifest and the blobs.
    let hash = "a".repeat(64);
    let body = |files: Value| {
        serde_json::json!({
            "main_module": "w.js",
            "modules": {"w.js": "export default { fetch() { return new Response('w'); } };"},
            "assets": {"files": files},
        })
    };
    for (files, code) in [
        (
            serde_json::json!({"/../etc/passwd": {"hash": hash, "size": 1}}),
            "invalid_assets",
        ),
        (
            serde_json::json!({"/a": {"hash": "../../x", "size": 1}}),
            "invalid_assets",
        ),
        (
            serde_json::json!({"/a": {"hash": hash, "size": 1u64 << 40}}),
            "asset_too_large",
        ),
        (
            serde_json::json!({"/a": {"hash": hash, "size": 1}}),
            "missing_assets",
        ),
    ] {
        let (status, err) = node.deploy_body("checked", &body(files.clone()));
        assert_eq!(status, 400, "{files}: {err}");
        assert_eq!(err["error"]["code"], code, "{files}: {err}");
    }
    let (status, err) = node.deploy_body(
        "checked",
        &serde_json::json!({
            "main_module": "w.js",
            "modules": {"w.js": "export default {};"},
            "bindings": [{"type": "assets", "name": "ASSETS"}],
        }),
    );
    assert_eq!(status, 400, "{err}");
    let resp = node
        .http
        .put(format!("{}/v1/assets/{hash}", node.control))
        .bearer_auth(TOKEN)
        .body("not the content of that hash")
        .send()
        .expect("put");
    assert_eq!(resp.status().as_u16(), 400);
    let err: Value = resp.json().expect("json");
    assert_eq!(err["error"]["code"], "invalid_asset", "{err}");
}

/// A project with `nodejs_compat`: the node: modules real projects use, from
/// the worker and from a CommonJS npm dependency that require()s them.
fn node_project(dir: &Path) {
    write(
        dir,
        "wrangler.toml",
        br#"
name = "nodeapp"
main = "src/index.js"
compatibility_date = "2025-05-01"
compatibility_flags = ["nodejs_compat"]

[vars]
STAGE = "prod"
LIMITS = { max = 3 }

[[kv_namespaces]]
binding = "KV"
id = "node-kv"
"#,
    );
    write(
        dir,
        "node_modules/legacy-hash/package.json",
        br#"{"name":"legacy-hash","version":"1.0.0","main":"index.js"}"#,
    );
    write(
        dir,
        "node_modules/legacy-hash/index.js",
        br#"'use strict';
const crypto = require('crypto');
const { Buffer } = require('node:buffer');
const EventEmitter = require('events');
module.exports = function legacyHash(s) {
  const e = new EventEmitter();
  let seen = 0;
  e.on('x', () => seen++);
  e.emit('x');
  return crypto.createHash('sha1').update(Buffer.from(s)).digest('hex') + ':' + seen + ':' +
    typeof require('url').fileURLToPath + ':' + typeof require('util').TextEncoder;
};
"#,
    );
    write(
        dir,
        "src/index.js",
        br#"
import { Buffer } from "node:buffer";
import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import crypto, { createHash, createHmac, randomBytes, timingSafeEqual, webcrypto, randomInt } from "node:crypto";
import { EventEmitter, once } from "node:events";
import path from "node:path";
import { promisify, format, inspect, types } from "node:util";
import { isUint8Array } from "node:util/types";
import { StringDecoder } from "node:string_decoder";
import assert from "node:assert";
import { strictEqual } from "node:assert/strict";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { setImmediate } from "node:timers";
import process from "node:process";
import { parse, fileURLToPath } from "node:url";
import legacyHash from "legacy-hash";

const als = new AsyncLocalStorage();
// The runtime's async-stores op, reached as the node modules reach it: it
// must not let this code change which request it runs for.
const setStores = globalThis.__edged_cloudflare_workers.node.setAsyncStores;

async function streams() {
  const upper = new Transform({
    transform(chunk, _enc, done) {
      done(null, chunk.toString().toUpperCase());
    },
  });
  let out = "";
  await pipeline(Readable.from(["a", "b", "c"]), upper, async function* (source) {
    for await (const chunk of source) out += chunk;
  });
  return out;
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/als") {
      const id = url.searchParams.get("id");
      return als.run(id, async () => {
        await sleep(Number(url.searchParams.get("ms")));
        const viaTimer = await new Promise((r) => setTimeout(() => r(als.getStore()), 1));
        const resource = new AsyncResource("x");
        const viaResource = await als.run("other", () => resource.runInAsyncScope(() => als.getStore()));
        ctx.waitUntil((async () => {
          await sleep(20);
          await env.KV.put(`wu-${id}`, JSON.stringify({ store: als.getStore() }));
        })());
        const store = als.getStore();
        setStores(1n);
        const kv = await env.KV.get("missing");
        return Response.json({ id, store, viaTimer, viaResource, outside: null, kv });
      });
    }
    const ee = new EventEmitter();
    setTimeout(() => ee.emit("ready", 7), 1);
    const [ready] = await once(ee, "ready");
    const decoder = new StringDecoder("utf8");
    const euro = Buffer.from("\u20ac");
    const split = decoder.write(euro.subarray(0, 1)) + "|" + decoder.write(euro.subarray(1));
    let assertion = null;
    try {
      assert.strictEqual(1, 2);
    } catch (e) {
      assertion = e.name;
    }
    strictEqual(1, 1);
    const wait = promisify((ms, cb) => setTimeout(() => cb(null, ms), ms));
    const immediate = await new Promise((r) => setImmediate(() => r("ran")));
    const rnd = randomBytes(16);
    let badLength = null;
    try {
      timingSafeEqual(Buffer.from("a"), Buffer.from("ab"));
    } catch (e) {
      badLength = e instanceof RangeError;
    }
    return Response.json({
      globalBuffer: globalThis.Buffer === Buffer,
      globalProcess: globalThis.process === process,
      base64: Buffer.from("hello").toString("base64"),
      hex: Buffer.from([1, 2, 255]).toString("hex"),
      concat: Buffer.concat([Buffer.from("a"), Buffer.from("b")]).toString(),
      sha256: createHash("sha256").update("a").update("bc").digest("hex"),
      md5: crypto.createHash("md5").update("abc").digest("base64"),
      hmac: createHmac("sha256", "key").update("The quick brown fox jumps over the lazy dog").digest("hex"),
      random: rnd.length === 16 && Buffer.isBuffer(rnd),
      randomInt: randomInt(5, 6),
      safeEqual: timingSafeEqual(Buffer.from("abc"), Buffer.from("abc")),
      badLength,
      subtle: webcrypto.subtle === globalThis.crypto.subtle,
      legacy: legacyHash("abc"),
      b64url: createHash("sha256").update(Buffer.from("YWJj", "base64url")).digest("base64url"),
      ready,
      path: path.join("/a/b", "../c", "d.txt"),
      ext: path.extname("x/y.tar.gz"),
      format: format("%s:%d", "a", 1),
      inspect: inspect({ a: [1, 2] }),
      isU8: isUint8Array(new Uint8Array(1)) && types.isDate(new Date()),
      split,
      assertion,
      waited: await wait(2),
      immediate,
      streams: await streams(),
      env: process.env.STAGE,
      envJson: process.env.LIMITS ?? null,
      nextTick: await new Promise((r) => process.nextTick(r, "tick")),
      port: parse("http://u@h.example:8080/p?q=1").port,
      file: fileURLToPath("file:///tmp/a%20b"),
    });
  },
};
"#,
    );
}

#[test]
fn a_nodejs_compat_project_runs_its_node_modules() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    node_project(dir);
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("nodejs_compat"),
        "the flag is acted on: {stderr}"
    );

    let (status, body) = node.get_worker("nodeapp", "/");
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    let want = serde_json::json!({
        "globalBuffer": true,
        "globalProcess": true,
        "base64": "aGVsbG8=",
        "hex": "0102ff",
        "concat": "ab",
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "md5": "kAFQmDzST7DWlj99KOF/cg==",
        "hmac": "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        "random": true,
        "randomInt": 5,
        "safeEqual": true,
        "badLength": true,
        "subtle": true,
        "legacy": "a9993e364706816aba3e25717850c26c9cd0d89d:1:function:function",
        "b64url": "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0",
        "ready": 7,
        "path": "/a/c/d.txt",
        "ext": ".gz",
        "format": "a:1",
        "inspect": "{ a: [ 1, 2 ] }",
        "isU8": true,
        "split": "|\u{20ac}",
        "assertion": "AssertionError",
        "waited": 2,
        "immediate": "ran",
        "streams": "ABC",
        "env": "prod",
        "envJson": null,
        "nextTick": "tick",
        "port": "8080",
        "file": "/tmp/a b",
    });
    assert_eq!(got, want);

    // AsyncLocalStorage: concurrent requests, each awaiting a different
    // time, each sees its own store after awaits, in timers and in its
    // waitUntil work; the store ops cannot move code into another request.
    let ids: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let node = &node;
                s.spawn(move || {
                    node.get_worker("nodeapp", &format!("/als?id={id}&ms={}", (8 - i) * 15))
                })
            })
            .collect();
        for (h, id) in handles.into_iter().zip(&ids) {
            let (status, body) = h.join().expect("thread");
            assert_eq!(status, 200, "{body}");
            let got: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(
                got,
                serde_json::json!({"id": id, "store": id, "viaTimer": id, "viaResource": id, "outside": null, "kv": null}),
                "{body}"
            );
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for id in &ids {
        loop {
            let (_, value) = node.control_request(
                reqwest::Method::GET,
                &format!("/v1/kv/node-kv/values/wu-{id}"),
                None,
            );
            if value["store"] == Value::String(id.clone()) {
                break;
            }
            if std::time::Instant::now() >= deadline {
                let (_, keys) =
                    node.control_request(reqwest::Method::GET, "/v1/kv/node-kv/keys", None);
                panic!("waitUntil of {id}: {value}; keys: {keys}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    // A node: module edged lacks, and node: modules without the flag, are
    // refused at deploy, naming the module; the deployed version serves on.
    write(
        dir,
        "src/index.js",
        b"import { readFileSync } from 'node:fs'; export default { fetch() { return new Response(typeof readFileSync); } };\n",
    );
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("node:fs") && stderr.contains("does not implement"),
        "{stderr}"
    );
    write(
        dir,
        "wrangler.toml",
        b"name = \"nodeapp\"\nmain = \"src/index.js\"\ncompatibility_date = \"2025-05-01\"\n",
    );
    write(
        dir,
        "src/index.js",
        b"import { Buffer } from 'node:buffer'; export default { fetch() { return new Response(Buffer.from('x')); } };\n",
    );
    let (ok, _, stderr) = deploy(&node, dir, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("node:buffer") && stderr.contains("nodejs_compat"),
        "{stderr}"
    );
    assert_eq!(node.get_worker("nodeapp", "/").0, 200);
}

/// `cloudflare:node`'s httpServerHandler serving a node:http server: the
/// request's method, path, headers and body reach the Node handler, and its
/// status, headers and streamed writes make the response.
#[test]
fn a_node_http_server_serves_through_http_server_handler() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(
        dir,
        "wrangler.jsonc",
        br#"{ "name": "nodehttp", "main": "server.js", "compatibility_date": "2025-09-01",
              "compatibility_flags": ["nodejs_compat"] }"#,
    );
    write(
        dir,
        "server.js",
        br#"
import { createServer } from "node:http";
import { httpServerHandler } from "cloudflare:node";

const server = createServer(async (req, res) => {
  if (req.url === "/empty") {
    res.writeHead(204, { "x-empty": "yes" });
    return res.end();
  }
  let body = "";
  for await (const chunk of req) body += chunk;
  res.setHeader("Content-Type", "application/json");
  res.appendHeader("x-many", "a");
  res.appendHeader("x-many", "b");
  res.statusCode = req.method === "POST" ? 201 : 200;
  res.write('{"method":' + JSON.stringify(req.method));
  res.write(',"url":' + JSON.stringify(req.url));
  res.end(',"body":' + JSON.stringify(body) + ',"agent":' + JSON.stringify(req.headers["x-test"] ?? null) + "}");
});
server.listen(8080);
export default httpServerHandler({ port: 8080 });
"#,
    );
    let (ok, stdout, stderr) = deploy(&node, dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let resp = node
        .http
        .post(format!("{}/p/q?x=1", node.data))
        .header("host", "nodehttp.workers.localhost")
        .header("x-test", "hi")
        .body("hello body")
        .send()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(header(resp.headers(), "content-type"), "application/json");
    assert_eq!(header(resp.headers(), "x-many"), "a, b");
    let got: Value = resp.json().expect("json");
    assert_eq!(
        got,
        serde_json::json!({"method": "POST", "url": "/p/q?x=1", "body": "hello body", "agent": "hi"})
    );
    let (status, headers, body) = fetch(
        &node,
        reqwest::Method::GET,
        "nodehttp.workers.localhost",
        "/empty",
        &[],
    );
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "x-empty"), "yes");
    assert!(body.is_empty());
}

/// Two projects: a TypeScript service whose named entrypoint returns
/// `RpcTarget`s and functions, and a front worker (wrangler.jsonc) that
/// binds that entrypoint and a Durable Object of its own whose methods return
/// `RpcTarget`s too. Stubs call back into the callee, `dup()` and disposal
/// work as in Workers, a target's `[Symbol.dispose]()` runs once its last
/// stub is gone (explicitly, or when the calling request ends), and what a
/// stub can reach is the class's methods and getters only.
#[test]
fn rpc_targets_pass_by_reference_through_a_named_entrypoint_and_an_object() {
    let node = TestNode::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let svc = tmp.path().join("svc");
    write(
        &svc,
        "wrangler.toml",
        br#"
name = "accounts-svc"
main = "src/index.ts"
compatibility_date = "2025-01-01"
"#,
    );
    write(
        &svc,
        "src/index.ts",
        br#"
import { WorkerEntrypoint, RpcTarget } from "cloudflare:workers";

let disposedTotal = 0;

class Named extends RpcTarget {
  constructor(private label: string) { super(); }
  get name(): string { return this.label; }
}

class Counter extends RpcTarget {
  #n: number;
  secret = "an own property";
  constructor(start: number, private registry: Registry | null) {
    super();
    this.#n = start;
  }
  increment(by: number): number { this.#n += by; return this.#n; }
  get value(): number { return this.#n; }
  child(name: string): Named { return new Named(name); }
  [Symbol.dispose]() {
    disposedTotal++;
    if (this.registry !== null) this.registry.disposed++;
  }
}

class Registry extends RpcTarget {
  disposed = 0;
  make(start: number): Counter { return new Counter(start, this); }
  get disposedCount(): number { return this.disposed; }
}

export class Admin extends WorkerEntrypoint {
  counter(start: number) { return new Counter(start, null); }
  adder(base: number) { return (x: number) => base + x; }
  registry() { return new Registry(); }
  bundle() {
    return { label: "two", items: [new Named("a"), new Named("b")], add: (a: number, b: number) => a + b };
  }
  disposedTotal() { return disposedTotal; }
  async slowCounter() { await scheduler.wait(200); return new Counter(0, null); }
}

export default { fetch(): Response { return new Response("svc"); } };
"#,
    );
    let (ok, stdout, stderr) = deploy(&node, &svc, &[]);
    assert!(ok, "{stdout}\n{stderr}");

    let front = tmp.path().join("front");
    write(
        &front,
        "wrangler.jsonc",
        br#"{
  // The service's named entrypoint, and an object of this worker.
  "name": "front",
  "main": "src/index.js",
  "compatibility_date": "2025-01-01",
  "services": [{ "binding": "ADMIN", "service": "accounts-svc", "entrypoint": "Admin" }],
  "durable_objects": { "bindings": [{ "name": "LEDGER", "class_name": "Ledger" }] },
  "migrations": [{ "tag": "v1", "new_sqlite_classes": ["Ledger"] }]
}"#,
    );
    write(
        &front,
        "src/index.js",
        br#"
import { DurableObject, RpcTarget } from "cloudflare:workers";

let stashed = null;

class Session extends RpcTarget {
  constructor(obj, who) { super(); this.obj = obj; this.who = who; }
  async hello() { this.obj.count++; return `hello ${this.who} #${this.obj.count}`; }
  [Symbol.dispose]() { this.obj.disposed++; }
}

export class Ledger extends DurableObject {
  count = 0;
  disposed = 0;
  open(who) { return new Session(this, who); }
  stats() { return { count: this.count, disposed: this.disposed }; }
}

const text = (e) => `${e.name}: ${e.message}`;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const out = {};
    if (url.pathname === "/service") {
      const c = await env.ADMIN.counter(5);
      out.inc = await c.increment(2);
      out.value = await c.value;
      out.secret = (await c.secret) ?? "unreachable";
      try { await c.constructor(); } catch (e) { out.ctor = text(e); }
      out.child = await (await c.child("kid")).name;
      const add = await env.ADMIN.adder(10);
      out.add = await add(5);
      const b = await env.ADMIN.bundle();
      out.bundle = [b.label, await b.items[0].name, await b.items[1].name, await b.add(2, 3)];
      b[Symbol.dispose]();
      try { await b.items[0].name; } catch (e) { out.afterBundleDispose = text(e); }
      const reg = await env.ADMIN.registry();
      const x = await reg.make(1);
      const y = x.dup();
      x[Symbol.dispose]();
      out.afterFirstDispose = [await y.increment(1), await reg.disposedCount];
      y[Symbol.dispose]();
      try { await y.increment(1); } catch (e) { out.disposedUse = text(e); }
      out.disposedCount = await reg.disposedCount;
      try { await env.ADMIN.counter(() => 1); } catch (e) { out.fnArg = text(e); }
      stashed = add;
      return Response.json(out);
    }
    if (url.pathname === "/fire") {
      // Not awaited: the answer arrives after this request has ended.
      env.ADMIN.slowCounter();
      return new Response("fired");
    }
    if (url.pathname === "/stashed") {
      try { out.r = await stashed(1); } catch (e) { out.err = text(e); }
      out.total = await env.ADMIN.disposedTotal();
      return Response.json(out);
    }
    const ledger = env.LEDGER.get(env.LEDGER.idFromName("main"));
    if (url.pathname === "/object") {
      const s = await ledger.open("ann");
      out.first = await s.hello();
      out.second = await s.hello();
      // Not disposed here: it goes when this request ends.
      const t = await ledger.open("bob");
      out.third = await t.hello();
      s[Symbol.dispose]();
      return Response.json(out);
    }
    return Response.json(await ledger.stats());
  },
};
"#,
    );
    let (ok, stdout, stderr) = deploy(&node, &front, &[]);
    assert!(ok, "{stdout}\n{stderr}");

    let (status, body) = node.get_worker("front", "/service");
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["inc"], 7, "{got}");
    assert_eq!(got["value"], 7, "a getter of the class: {got}");
    assert_eq!(
        got["secret"], "unreachable",
        "own properties stay home: {got}"
    );
    assert_eq!(
        got["ctor"],
        "TypeError: The RPC receiver does not implement the method \"constructor\"."
    );
    assert_eq!(got["child"], "kid", "a target returned by a target");
    assert_eq!(got["add"], 15, "a function returned by reference");
    assert_eq!(got["bundle"], serde_json::json!(["two", "a", "b", 5]));
    assert_eq!(
        got["afterBundleDispose"],
        "Error: Attempted to use RPC stub after it has been disposed."
    );
    assert_eq!(
        got["afterFirstDispose"],
        serde_json::json!([2, 0]),
        "a dup keeps the target alive: {got}"
    );
    assert_eq!(
        got["disposedUse"],
        "Error: Attempted to use RPC stub after it has been disposed."
    );
    assert_eq!(
        got["disposedCount"], 1,
        "the last stub ran the disposer: {got}"
    );
    assert!(
        got["fnArg"].as_str().is_some_and(
            |s| s.starts_with("TypeError: edged cannot pass an RpcTarget or a function")
        ),
        "{got}"
    );

    // A call nobody awaited answers after its request ended: its target is
    // let go at once (nobody may hold it).
    assert_eq!(node.get_worker("front", "/fire"), (200, "fired".to_owned()));

    // The stub stashed by the last request went with it, and its targets'
    // disposers ran (the counter it never disposed, the one it did, and the
    // one nobody could hold).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = node.get_worker("front", "/stashed");
        assert_eq!(status, 200, "{body}");
        let got: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            got["err"], "Error: Attempted to use RPC stub after it has been disposed.",
            "{got}"
        );
        if got["total"] == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "disposers: {got}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A Durable Object's targets: calls reach the object's own instance.
    let (status, body) = node.get_worker("front", "/object");
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(got["first"], "hello ann #1");
    assert_eq!(got["second"], "hello ann #2");
    assert_eq!(got["third"], "hello bob #3");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = node.get_worker("front", "/stats");
        assert_eq!(status, 200, "{body}");
        let got: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(got["count"], 3, "{got}");
        if got["disposed"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "object disposers: {got}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// In a cluster, a project's static assets deployed through one PoP are
/// served byte for byte by every PoP (the blobs travel through the engine),
/// a redeploy's changed file reaches them all, and a deploy through one PoP
/// may name blobs uploaded through another.
#[test]
fn static_assets_reach_every_pop_of_a_cluster() {
    use common::cluster::{cluster_config, wait_members, NatsCore};
    let core = NatsCore::start(3);
    let pop =
        |node: &str, region: &str| TestNode::start_with(&cluster_config(&core.urls, node, region));
    let nodes = [pop("pop-a", "eu"), pop("pop-b", "us"), pop("pop-c", "ap")];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write(
        dir,
        "wrangler.toml",
        b"name = \"site\"\nmain = \"src/index.js\"\ncompatibility_date = \"2025-04-01\"\n\n[assets]\ndirectory = \"./public\"\nbinding = \"ASSETS\"\n",
    );
    write(
        dir,
        "src/index.js",
        b"export default { async fetch(request, env) { return new Response('worker'); } };",
    );
    write(dir, "public/index.html", b"<h1>home</h1>");
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    write(dir, "public/big.bin", &big);
    let (ok, stdout, stderr) = deploy(&nodes[0], dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let served = |node: &TestNode, path: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, _, body) = fetch(
                node,
                reqwest::Method::GET,
                "site.workers.localhost",
                path,
                &[],
            );
            if status == 200 {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "{path}: {status}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    for node in &nodes {
        assert_eq!(served(node, "/"), b"<h1>home</h1>");
        assert!(served(node, "/big.bin") == big, "3 MiB byte for byte");
    }

    // A redeploy with a changed file: every PoP serves the new one.
    write(dir, "public/index.html", b"<h1>home v2</h1>");
    let (ok, stdout, stderr) = deploy(&nodes[0], dir, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    for node in &nodes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while served(node, "/") != b"<h1>home v2</h1>" {
            assert!(std::time::Instant::now() < deadline, "v2 not served");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    // A blob uploaded through pop-b, named by a deploy through pop-c.
    let content = b"uploaded elsewhere";
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(content))
    };
    let resp = nodes[1]
        .http
        .put(format!("{}/v1/assets/{hash}", nodes[1].control))
        .bearer_auth(TOKEN)
        .body(content.to_vec())
        .send()
        .expect("put");
    assert_eq!(resp.status().as_u16(), 200);
    let (status, body) = nodes[2].deploy_body(
        "elsewhere",
        &serde_json::json!({
            "main_module": "w.js",
            "modules": {"w.js": "export default { fetch() { return new Response('w'); } };"},
            "assets": {"files": {"/e.txt": {"hash": hash, "size": content.len()}}},
        }),
    );
    assert_eq!(status, 200, "{body}");
    for node in &nodes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, _, body) = fetch(
                node,
                reqwest::Method::GET,
                "elsewhere.workers.localhost",
                "/e.txt",
                &[],
            );
            if status == 200 {
                assert_eq!(body, content);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    drop(nodes);
    drop(core);
}
