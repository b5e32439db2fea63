//! End-to-end: a hostile tenant cannot escape its isolate, defeat the runtime's
//! limits, or reach the node. Every test deploys an ordinary Workers script
//! through the control plane, attacks, and checks that the attack fails cleanly
//! and that the node (and a bystander worker) keeps serving.

mod common;

use std::time::Duration;

use common::origin::Origin;
use common::TestNode;
use serde_json::{json, Value};

const BYSTANDER: &str = "export default { fetch() { return new Response('still here'); } }";

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

/// Deploys `source` as `name`, expecting a 400; returns the error message.
fn deploy_refused(node: &TestNode, name: &str, source: &str) -> String {
    let (status, body) = node.deploy(name, source, json!([]), &[]);
    assert_eq!(status, 400, "{body}");
    body["error"]["message"].as_str().unwrap_or("").to_owned()
}

/// The node answers, and so does another tenant.
fn assert_node_serves(node: &mut TestNode) {
    assert!(node.alive(), "the node died:\n{}", node.log());
    assert_eq!(
        node.get_worker("bystander", "/"),
        (200, "still here".to_owned())
    );
}

/// Names a Workers global scope has; anything else on globalThis is a leak.
const WORKERS_GLOBALS: &[&str] = &[
    // ECMAScript
    "Object",
    "Function",
    "Array",
    "Number",
    "parseFloat",
    "parseInt",
    "Infinity",
    "NaN",
    "undefined",
    "Boolean",
    "String",
    "Symbol",
    "Date",
    "Promise",
    "RegExp",
    "Error",
    "AggregateError",
    "EvalError",
    "RangeError",
    "ReferenceError",
    "SyntaxError",
    "TypeError",
    "URIError",
    "globalThis",
    "JSON",
    "Math",
    "Intl",
    "ArrayBuffer",
    "Atomics",
    "Uint8Array",
    "Int8Array",
    "Uint16Array",
    "Int16Array",
    "Uint32Array",
    "Int32Array",
    "BigUint64Array",
    "BigInt64Array",
    "Uint8ClampedArray",
    "Float32Array",
    "Float64Array",
    "Float16Array",
    "DataView",
    "Map",
    "BigInt",
    "Set",
    "WeakMap",
    "WeakSet",
    "Proxy",
    "Reflect",
    "FinalizationRegistry",
    "WeakRef",
    "decodeURI",
    "decodeURIComponent",
    "encodeURI",
    "encodeURIComponent",
    "escape",
    "unescape",
    "eval",
    "isFinite",
    "isNaN",
    "Iterator",
    "SharedArrayBuffer",
    "WebAssembly",
    // Web and Workers APIs
    "console",
    "queueMicrotask",
    "URL",
    "URLSearchParams",
    "URLPattern",
    "Headers",
    "Request",
    "Response",
    "FormData",
    "fetch",
    "TextEncoder",
    "TextDecoder",
    "TextEncoderStream",
    "TextDecoderStream",
    "atob",
    "btoa",
    "ReadableStream",
    "ReadableStreamDefaultReader",
    "ReadableStreamBYOBReader",
    "ReadableByteStreamController",
    "ReadableStreamDefaultController",
    "WritableStream",
    "WritableStreamDefaultWriter",
    "TransformStream",
    "ByteLengthQueuingStrategy",
    "CountQueuingStrategy",
    "CompressionStream",
    "DecompressionStream",
    "Blob",
    "File",
    "Event",
    "EventTarget",
    "CustomEvent",
    "ErrorEvent",
    "MessageEvent",
    "CloseEvent",
    "WebSocket",
    "WebSocketPair",
    "WebSocketRequestResponsePair",
    "PromiseRejectionEvent",
    "AbortController",
    "AbortSignal",
    "DOMException",
    "MessageChannel",
    "MessagePort",
    "setTimeout",
    "setInterval",
    "clearTimeout",
    "clearInterval",
    "scheduler",
    "structuredClone",
    "performance",
    "crypto",
    "Crypto",
    "CryptoKey",
    "SubtleCrypto",
    "self",
    "navigator",
    "caches",
    "Cache",
    "CacheStorage",
];

const PROBE: &str = r#"
export default {
  async fetch(request) {
    const out = {};
    out.globals = Object.getOwnPropertyNames(globalThis);
    out.symbols = Object.getOwnPropertySymbols(globalThis).map(String);
    out.bootstrap = typeof globalThis.__bootstrap;
    out.deno = typeof globalThis.Deno;
    out.internals = typeof globalThis.__edged_internals;
    const attempt = async (f) => {
      try { await f(); return "allowed"; } catch (e) { return `${e.name}`; }
    };
    out.eval = await attempt(() => eval("1"));
    out.newFunction = await attempt(() => new Function("return 1")());
    out.fnCtor = await attempt(() => (function () {}).constructor("return 1")());
    out.asyncCtor = await attempt(() => (async function () {}).constructor("return 1")());
    out.importCore = await attempt(() => import("ext:core/ops"));
    out.importMod = await attempt(() => import("ext:core/mod.js"));
    out.importNode = await attempt(() => import("node:fs"));
    out.importData = await attempt(() => import("data:text/javascript,export default 1"));
    out.wasm = await attempt(() => WebAssembly.compile(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])));
    // Stack-trace hooks: call sites of runtime frames give away no functions.
    let leaked = [];
    Error.prepareStackTrace = (err, sites) => {
      for (const s of sites) {
        const f = s.getFunction?.();
        const t = s.getThis?.();
        if (f !== undefined || (t !== undefined && t !== globalThis)) {
          leaked.push(String(s.getFileName()));
        }
      }
      return "stack";
    };
    try { new Response(null, { status: 1000 }); } catch (e) { e.stack; }
    try { await fetch("not a url"); } catch (e) { e.stack; }
    try { new URL("::"); } catch (e) { e.stack; }
    delete Error.prepareStackTrace;
    out.leaked = leaked.filter((f) => !f.startsWith("file:///"));
    // Runtime objects carry no handle on the runtime's internals.
    const seen = new Set();
    const suspicious = [];
    const walk = (o, path, depth) => {
      if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o) || depth > 4) return;
      seen.add(o);
      for (const k of Reflect.ownKeys(o)) {
        let v;
        try { v = o[k]; } catch { continue; }
        const name = String(k.description ?? k);
        if (/^(core|ops|primordials|internals|__bootstrap|op_\w+)$/.test(name)) suspicious.push(`${path}.${name}`);
        walk(v, `${path}.${name}`, depth + 1);
      }
    };
    for (const g of ["console", "crypto", "caches", "scheduler", "performance", "navigator", "Response", "Request", "URL", "fetch"]) {
      walk(globalThis[g], g, 0);
    }
    out.suspicious = suspicious;
    return Response.json(out);
  },
};
"#;

#[test]
fn runtime_internals_are_unreachable_from_tenant_code() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    node.deploy_ok("probe", PROBE);
    let (status, body) = node.get_worker("probe", "/");
    assert_eq!(status, 200, "{body}");
    let out = body_json(&body);
    for key in ["bootstrap", "deno", "internals"] {
        assert_eq!(out[key], "undefined", "{key}: {out}");
    }
    let extra: Vec<&str> = out["globals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|g| !WORKERS_GLOBALS.contains(g))
        .collect();
    assert!(
        extra.is_empty(),
        "globals a Workers isolate does not have: {extra:?}"
    );
    assert_eq!(out["symbols"], json!([]));
    for key in ["eval", "newFunction", "fnCtor", "asyncCtor"] {
        assert_eq!(out[key], "EvalError", "{key}: {out}");
    }
    for key in ["importCore", "importMod", "importNode", "importData"] {
        assert_eq!(out[key], "TypeError", "{key}: {out}");
    }
    assert_ne!(
        out["wasm"], "allowed",
        "compiling WebAssembly from bytes: {out}"
    );
    assert_eq!(out["leaked"], json!([]), "{out}");
    assert_eq!(out["suspicious"], json!([]), "{out}");
    assert_node_serves(&mut node);
}

#[test]
fn console_output_cannot_forge_log_lines() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    node.deploy_ok(
        "forger",
        r#"export default { fetch() {
            console.log("hello\n2026-12-01T00:00:00.000000Z  INFO edged::http: FORGED-LINE\r\n\u001b[31mred");
            return new Response("logged");
        } }"#,
    );
    assert_eq!(node.get_worker("forger", "/"), (200, "logged".to_owned()));
    std::thread::sleep(Duration::from_millis(300));
    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("FORGED-LINE"))
        .expect("the message was logged");
    assert!(
        line.contains("worker=forger") && line.contains("request_id="),
        "attributed: {line}"
    );
    assert!(
        !line.contains("request_id=0"),
        "tagged with its request: {line}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00")),
        "a forged line reached the log"
    );
    assert!(!log.contains('\u{1b}'), "a terminal escape reached the log");
    assert_node_serves(&mut node);
}

/// Built-ins the runtime's own JavaScript used to rely on, patched to lie.
const PATCHES: &str = r#"
const realGet = Map.prototype.get;
Map.prototype.get = function (k) { return 0; };
Map.prototype.set = function () { return this; };
Map.prototype.has = function () { return false; };
Set.prototype.has = function () { return false; };
Set.prototype.add = function () { return this; };
Array.prototype.push = function () { return 0; };
Array.prototype[Symbol.iterator] = function* () {};
Object.defineProperty = function (o) { return o; };
Object.freeze = (o) => o;
Reflect.apply = () => undefined;
Function.prototype.apply = function () { return undefined; };
Function.prototype.bind = function () { return () => undefined; };
String.prototype.startsWith = () => false;
RegExp.prototype.exec = () => null;
JSON.parse = () => ({});
Promise.prototype.catch = function () { return this; };
globalThis.Response.json = Response.json;
"#;

#[test]
fn patched_builtins_do_not_lift_subrequest_depth_or_wait_until_limits() {
    let origin = Origin::start();
    let mut node = TestNode::start_with(
        "[limits]\nsubrequests = 4\nwait_until_s = 1\n[egress]\nallow = [\"127.0.0.1\"]\n",
    );
    node.deploy_ok("bystander", BYSTANDER);
    let source = format!(
        r#"{PATCHES}
export default {{
  async fetch(request, env, ctx) {{
    const u = new URL(request.url);
    if (u.pathname === "/many") {{
      let n = 0;
      try {{ for (let i = 0; i < 10; i++) {{ await fetch(u.searchParams.get("u")); n++; }} }}
      catch (e) {{ return new Response(`${{n}} then ${{e.message}}`); }}
      return new Response(`${{n}} fetches`);
    }}
    if (u.pathname === "/deep") {{
      const d = Number(u.searchParams.get("d") ?? "0");
      if (d > 40) return new Response("bottom");
      try {{
        const r = await env.SELF.fetch(`https://self/deep?d=${{d + 1}}`);
        return new Response(await r.text());
      }} catch (e) {{ return new Response(`stopped at ${{d}}: ${{e.message}}`); }}
    }}
    if (u.pathname === "/late") {{
      ctx.waitUntil((async () => {{
        await new Promise((r) => setTimeout(r, 1500));
        await fetch(u.searchParams.get("u") + "/late");
      }})());
      return new Response("responded");
    }}
    return new Response("ok");
  }},
}};"#
    );
    let (status, body) = node.deploy(
        "patcher",
        &source,
        json!([{"type": "service", "name": "SELF", "service": "patcher"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let (_, b) = node.get_worker("patcher", &format!("/many?u={}/hello", origin.url));
    assert!(b.starts_with("4 then Too many subrequests."), "{b}");
    let (_, b) = node.get_worker("patcher", "/deep");
    assert!(
        b.starts_with("stopped at ") && b.contains("Subrequest depth limit exceeded"),
        "{b}"
    );
    let depth: u32 = b["stopped at ".len()..]
        .split(':')
        .next()
        .and_then(|d| d.parse().ok())
        .expect("depth");
    assert!(depth <= 16, "recursed to depth {depth}");
    let before = origin.seen().len();
    let (_, b) = node.get_worker("patcher", &format!("/late?u={}", origin.url));
    assert_eq!(b, "responded");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !origin.seen()[before..]
            .iter()
            .any(|(_, path, _)| path == "/late"),
        "waitUntil work outlived its window"
    );
    assert_node_serves(&mut node);
}

#[test]
fn the_builtin_that_op_dispatch_relies_on_cannot_be_replaced() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    let message = deploy_refused(&node, "breaker", "Function.prototype.call = function () {};\nexport default { fetch() { return new Response('x'); } }");
    assert!(
        message.starts_with("TypeError: Cannot assign to read only property 'call'"),
        "{message}"
    );
    assert_node_serves(&mut node);
}

#[test]
fn time_stands_still_while_code_runs_and_moves_across_io() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    node.deploy_ok(
        "clock",
        r#"export default { async fetch() {
            const a = Date.now(), p = performance.now(), d = new Date().getTime();
            const f = new Intl.DateTimeFormat("en", { timeStyle: "medium", timeZone: "UTC" });
            const fa = f.format();
            let x = 0; const until = a + 30;
            // A busy loop long enough for a real clock to move (several ms), and
            // short enough to stay well inside the 50 ms CPU limit on a loaded CI box.
            for (let i = 0; i < 4e6; i++) x += i;
            const b = Date.now(), q = performance.now();
            await scheduler.wait(20);
            const c = Date.now();
            return Response.json({
              frozen: a === b && p === q && d === a && fa === f.format(a),
              moved: c >= a + 20,
              dateFn: typeof Date() === "string",
              instance: new Date() instanceof Date && Object.getPrototypeOf(new Date()) === Date.prototype,
              parse: Date.parse("2020-01-01T00:00:00Z") === 1577836800000,
              utc: Date.UTC(2020, 0, 1) === 1577836800000,
              fixed: new Date(5).getTime() === 5,
              sub: (() => { class D extends Date {}; return new D(7).getTime() === 7 && new D() instanceof D; })(),
              x: x > 0,
            });
        } }"#,
    );
    let (status, body) = node.get_worker("clock", "/");
    assert_eq!(status, 200, "{body}");
    let out = body_json(&body);
    for (k, v) in out.as_object().unwrap() {
        assert_eq!(v, true, "{k}: {out}");
    }
    assert_node_serves(&mut node);
}

#[test]
fn atomics_wait_and_global_scope_io_are_refused() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    node.deploy_ok(
        "waiter",
        r#"export default { fetch() {
            const sab = new Int32Array(new SharedArrayBuffer(4));
            try { Atomics.wait(sab, 0, 0, 5000); return new Response("blocked"); }
            catch (e) { return new Response(`${e.name}: ${e.message}`); }
        } }"#,
    );
    let started = std::time::Instant::now();
    let (status, body) = node.get_worker("waiter", "/");
    assert_eq!(status, 200);
    assert!(body.starts_with("TypeError"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // At top level too: the deploy is refused, it does not hang a thread.
    let (status, body) = node.deploy(
        "top-waiter",
        "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);\nexport default { fetch() { return new Response('x'); } }",
        json!([]),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Timers and I/O in the global scope: Workers' error, at deploy.
    let message = deploy_refused(
        &node,
        "top-timer",
        "setTimeout(() => {}, 10);\nexport default { fetch() { return new Response('x'); } }",
    );
    assert!(
        message.contains("Disallowed operation called within global scope"),
        "{message}"
    );
    assert_node_serves(&mut node);
}

const SQL_ATTACKER: &str = r#"
export class Box {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const u = new URL(request.url);
    const sql = this.ctx.storage.sql;
    if (u.pathname === "/put") {
      sql.exec("CREATE TABLE IF NOT EXISTS secrets (v TEXT)");
      sql.exec("INSERT INTO secrets VALUES (?)", u.searchParams.get("v"));
      await this.ctx.storage.put("k", u.searchParams.get("v"));
      return new Response("stored");
    }
    if (u.pathname === "/get") {
      return new Response(sql.exec("SELECT v FROM secrets").toArray().map((r) => r.v).join(","));
    }
    const results = {};
    const attempt = (name, q) => {
      try { results[name] = { ok: true, rows: sql.exec(q).toArray() }; }
      catch (e) { results[name] = { ok: false, error: `${e.name}: ${e.message}` }; }
    };
    const target = u.searchParams.get("target");
    const outside = u.searchParams.get("outside");
    attempt("attach_other", `ATTACH DATABASE '${target}' AS other`);
    attempt("attach_outside", `ATTACH DATABASE '${outside}' AS made`);
    attempt("vacuum_into", `VACUUM INTO '${outside}.copy'`);
    attempt("max_page_count", "PRAGMA max_page_count = 2147483647");
    attempt("writable_schema", "PRAGMA writable_schema = ON");
    attempt("journal_mode", "PRAGMA journal_mode = OFF");
    attempt("synchronous", "PRAGMA synchronous = OFF");
    attempt("database_list", "PRAGMA database_list");
    attempt("reserved_read", "SELECT * FROM _edged_kv");
    attempt("reserved_quoted", 'SELECT * FROM "_EDGED_KV"');
    attempt("reserved_schema", "SELECT * FROM main._edged_kv");
    attempt("reserved_pragma", "PRAGMA table_info('_edged_kv')");
    attempt("reserved_fn", "SELECT * FROM pragma_table_info('_edged_kv')");
    // A view or trigger may name the reserved tables, but nothing runs through them.
    try { sql.exec("CREATE VIEW IF NOT EXISTS peek AS SELECT * FROM _edged_kv"); } catch {}
    attempt("reserved_view", "SELECT * FROM peek");
    try {
      sql.exec("CREATE TABLE IF NOT EXISTS bait (a)");
      sql.exec("CREATE TRIGGER IF NOT EXISTS smuggle AFTER INSERT ON bait BEGIN DELETE FROM _edged_kv; END");
    } catch {}
    attempt("reserved_via_trigger", "INSERT INTO bait VALUES (1)");
    attempt("reserved_trigger", "CREATE TRIGGER t AFTER INSERT ON _edged_alarm BEGIN SELECT 1; END");
    attempt("begin", "BEGIN TRANSACTION");
    attempt("load_extension", "SELECT load_extension('/tmp/x.so')");
    attempt("huge_blob", "SELECT length(randomblob(900000000)) AS n");
    attempt("own_table", "CREATE TABLE IF NOT EXISTS mine (a INTEGER)");
    attempt("own_pragma", "PRAGMA table_info(mine)");
    attempt("foreign_keys", "PRAGMA foreign_keys = ON");
    return Response.json(results);
  }
}
export default {
  fetch(request, env) {
    const u = new URL(request.url);
    return env.BOX.get(env.BOX.idFromName(u.searchParams.get("name") ?? "a")).fetch(request);
  },
};
"#;

fn object_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "db") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn durable_object_sql_stays_inside_its_own_database() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    let binding = json!([{"type": "durable_object_namespace", "name": "BOX", "class_name": "Box"}]);
    for name in ["victim", "attacker"] {
        let (s, b) = node.deploy(name, SQL_ATTACKER, binding.clone(), &[]);
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(
        node.get_worker("victim", "/put?name=v&v=victim-secret").1,
        "stored"
    );
    let victim_db = object_files(&node.data_dir().join("do"))
        .into_iter()
        .find(|p| !p.ends_with("alarms.db"))
        .expect("the victim's database");
    let outside = std::env::temp_dir().join(format!("edged-attack-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&outside);
    let (status, body) = node.get_worker(
        "attacker",
        &format!(
            "/attack?name=a&target={}&outside={}",
            victim_db.display(),
            outside.display()
        ),
    );
    assert_eq!(status, 200, "{body}");
    let results = body_json(&body);
    for attack in [
        "attach_other",
        "attach_outside",
        "vacuum_into",
        "max_page_count",
        "writable_schema",
        "journal_mode",
        "synchronous",
        "database_list",
        "reserved_read",
        "reserved_quoted",
        "reserved_schema",
        "reserved_pragma",
        "reserved_fn",
        "reserved_view",
        "reserved_via_trigger",
        "reserved_trigger",
        "begin",
        "load_extension",
        "huge_blob",
    ] {
        let r = &results[attack];
        assert_eq!(r["ok"], false, "{attack} was allowed: {r}");
        let error = r["error"].as_str().unwrap_or("");
        assert!(
            error.starts_with("Error") || error.starts_with("TypeError"),
            "{attack}: {error}"
        );
        let data_dir = node.data_dir().display().to_string();
        assert!(
            !error.contains(&data_dir) && !error.contains("/do/"),
            "{attack} disclosed a path: {error}"
        );
    }
    for allowed in ["own_table", "own_pragma", "foreign_keys"] {
        assert_eq!(
            results[allowed]["ok"], true,
            "{allowed}: {}",
            results[allowed]
        );
    }
    assert!(
        !outside.exists(),
        "ATTACH created a file outside the data directory"
    );
    assert!(!std::path::Path::new(&format!("{}.copy", outside.display())).exists());
    // The victim's data is intact and still its own.
    assert_eq!(node.get_worker("victim", "/get?name=v").1, "victim-secret");
    assert_node_serves(&mut node);
}

/// Every file and directory under `root`, relative.
fn tree(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn names_never_become_paths() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    let canary = std::env::temp_dir().join(format!("edged-canary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&canary);
    let long = "a".repeat(5000);
    let hostile: Vec<String> = vec![
        "../../..".into(),
        "../x".into(),
        canary.display().to_string(),
        "/etc".into(),
        "a\u{0}b".into(),
        "a/b".into(),
        "..".into(),
        ".".into(),
        "".into(),
        "\u{202e}x".into(),
        long,
    ];
    let object_source =
        "export class C {} export default { fetch() { return new Response('x'); } }";
    for name in &hostile {
        // Durable Object class names.
        let (s, b) = node.deploy(
            "namer",
            object_source,
            json!([{"type": "durable_object_namespace", "name": "D", "class_name": name}]),
            &[],
        );
        assert_eq!(s, 400, "class {name:?}: {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
        // KV namespaces.
        let (s, b) = node.deploy(
            "namer",
            object_source,
            json!([{"type": "kv_namespace", "name": "K", "namespace": name}]),
            &[],
        );
        assert_eq!(s, 400, "namespace {name:?}: {b}");
        // Service targets.
        let (s, _) = node.deploy(
            "namer",
            object_source,
            json!([{"type": "service", "name": "S", "service": name}]),
            &[],
        );
        assert_eq!(s, 400, "service {name:?}");
    }
    // Names in URL paths (percent-encoded, so they reach the handlers).
    let encoded = [
        "..%2F..%2Fetc",
        "%2Fetc",
        "a%00b",
        "%2E%2E",
        "%FF%FE",
        "x".repeat(300).leak(),
    ];
    for name in encoded {
        let (s, b) =
            node.control_request(reqwest::Method::GET, &format!("/v1/workers/{name}"), None);
        assert!(s == 400 || s == 404, "worker {name}: {s} {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
        let (s, b) = node.control_request(
            reqwest::Method::PUT,
            &format!("/v1/kv/{name}/values/k"),
            None,
        );
        assert!(s == 400 || s == 404, "kv {name}: {s} {b}");
        assert!(b["error"]["code"].is_string(), "{b}");
        let (s, _) = node.control_request(
            reqwest::Method::DELETE,
            &format!("/v1/accounts/{name}"),
            None,
        );
        assert!(s == 400 || s == 404, "account {name}: {s}");
    }
    let (s, _) = node.control_request(reqwest::Method::GET, "/v1/workers/Api", None);
    assert_eq!(s, 400, "an upper-case worker name");
    // A request body that is not UTF-8 is a clear 400, not a crash.
    let resp = node
        .http
        .put(format!("{}/v1/workers/namer", node.control))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Object names are hashed and object ids are checked: a hostile name
    // reaches no path.
    node.deploy(
        "objects",
        r#"export class C { constructor(ctx) { this.ctx = ctx; }
          async fetch() { await this.ctx.storage.put("k", 1); return new Response("ok"); } }
        export default { async fetch(req, env) {
          const names = ["../../..", "/etc/passwd", "a\u0000b", "x".repeat(10000)];
          for (const n of names) await env.D.getByName(n).fetch("https://o/");
          let refused = 0;
          for (const hex of ["../" + "a".repeat(61), "A".repeat(64), "g".repeat(64)]) {
            try { env.D.idFromString(hex); } catch (e) { if (e instanceof TypeError) refused++; }
          }
          const c = await caches.open("../../" + "x".repeat(100));
          await c.put("https://x/", new Response("y"));
          return new Response(`refused ${refused}`);
        } }"#,
        json!([{"type": "durable_object_namespace", "name": "D", "class_name": "C"}]),
        &[],
    );
    assert_eq!(
        node.get_worker("objects", "/"),
        (200, "refused 3".to_owned())
    );
    assert!(
        !canary.exists(),
        "a name became a path outside the data directory"
    );
    let safe = |s: &str| {
        s.split('/').all(|part| {
            !part.is_empty()
                && part != ".."
                && part.len() <= 100
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.$".contains(&b))
        })
    };
    for path in tree(&node.data_dir()) {
        assert!(safe(&path), "an unexpected name on disk: {path:?}");
    }
    assert_node_serves(&mut node);
}

const COUNTER: &str = r#"
export class Counter {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const u = new URL(request.url);
    if (u.pathname === "/hold") { await scheduler.wait(30000); return new Response("held"); }
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    await this.ctx.storage.put("v", v);
    return new Response(String(v));
  }
}
export default {
  async fetch(request, env) {
    const u = new URL(request.url);
    if (u.pathname === "/cache") {
      const c = caches.default;
      const hit = await c.match("https://c/key");
      if (hit) return new Response("cached " + (await hit.text()));
      await c.put("https://c/key", new Response("v1", { headers: { "cache-control": "max-age=600" } }));
      return new Response("stored");
    }
    return env.C.get(env.C.idFromName("one")).fetch(request);
  },
};
"#;

fn counter_binding() -> Value {
    json!([{"type": "durable_object_namespace", "name": "C", "class_name": "Counter"}])
}

#[test]
fn deleting_a_worker_stops_its_objects_and_removes_its_storage() {
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    let (s, b) = node.deploy("counter", COUNTER, counter_binding(), &[]);
    assert_eq!(s, 200, "{b}");
    for i in 1..=3 {
        assert_eq!(node.get_worker("counter", "/inc"), (200, i.to_string()));
    }
    assert_eq!(node.get_worker("counter", "/cache").1, "stored");
    assert_eq!(node.get_worker("counter", "/cache").1, "cached v1");
    let storage_dirs = || {
        std::fs::read_dir(node.data_dir().join("do"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .count()
    };
    assert_eq!(storage_dirs(), 1);
    // An event in flight when the worker is deleted fails at once.
    let held = {
        let http = node.http.clone();
        let url = format!("{}/hold", node.data);
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let r = http
                .get(url)
                .header("host", "counter.workers.localhost")
                .send()
                .unwrap();
            (r.status().as_u16(), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (s, b) = node.control_request(reqwest::Method::DELETE, "/v1/workers/counter", None);
    assert_eq!(s, 200, "{b}");
    let (status, took) = held.join().unwrap();
    // The object's event failed; the calling worker did not catch it.
    assert_eq!(status, 500);
    assert!(
        took < Duration::from_secs(10),
        "the held event ran on for {took:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while storage_dirs() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the storage was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A new worker of the same name starts empty: objects and caches.
    let (s, b) = node.deploy("counter", COUNTER, counter_binding(), &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("counter", "/inc"), (200, "1".to_owned()));
    assert_eq!(node.get_worker("counter", "/cache").1, "stored");

    // Kept storage: a redeploy by the same account picks it up; another
    // account cannot take the name meanwhile.
    assert_eq!(node.get_worker("counter", "/inc"), (200, "2".to_owned()));
    let (s, _) = node.control_request(
        reqwest::Method::DELETE,
        "/v1/workers/counter?keep_storage=true",
        None,
    );
    assert_eq!(s, 200);
    let (s, _) = node.control_request(
        reqwest::Method::POST,
        "/v1/accounts",
        Some(&json!({"id": "other"})),
    );
    assert_eq!(s, 201);
    let (s, b) = node.control_request(
        reqwest::Method::PUT,
        "/v1/workers/counter?account=other",
        Some(&json!({"main_module": "worker.js", "modules": {"worker.js": COUNTER}, "bindings": counter_binding()})),
    );
    assert_eq!(s, 403, "{b}");
    let (s, b) = node.deploy("counter", COUNTER, counter_binding(), &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("counter", "/inc"), (200, "3".to_owned()));
    assert_node_serves(&mut node);
}

#[test]
fn secrets_are_sealed_at_rest_and_the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut node = TestNode::start();
    node.deploy_ok("bystander", BYSTANDER);
    let secret = "correct-horse-battery-staple-7731";
    let (s, b) = node.deploy(
        "vault",
        // The source must not contain the secret: it is stored as it is.
        "export default { fetch(req, env) { return new Response(env.KEY.length === 33 && env.KEY.endsWith('-7731') ? 'has it' : 'missing'); } }",
        json!([{"type": "secret_text", "name": "KEY", "text": secret}]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("vault", "/"), (200, "has it".to_owned()));
    let (_, shown) = node.control_request(reqwest::Method::GET, "/v1/workers/vault", None);
    assert!(!shown.to_string().contains(secret), "{shown}");
    node.restart();
    assert_eq!(node.get_worker("vault", "/"), (200, "has it".to_owned()));
    let data = node.data_dir();
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    for path in tree(&data) {
        let p = data.join(&path);
        let meta = std::fs::metadata(&p).unwrap();
        if meta.is_file() {
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{path} is mode {mode:o}");
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{path} holds the secret in clear"
            );
        }
    }
    // Another node key cannot read them: the node refuses to start, clearly.
    node.kill();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
        .args(["serve", "--config"])
        .arg(data.parent().unwrap().join("edged.toml"))
        .env("EDGED_NODE_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node key does not match"), "{stderr}");
}

#[test]
fn bad_host_headers_are_a_400_and_metrics_can_need_the_token() {
    let mut node = TestNode::start_with("metrics_token = true\n");
    node.deploy_ok("bystander", BYSTANDER);
    for host in ["x:99999", "a b", "x:-1"] {
        let (s, b) = node.get(host, "/");
        assert_eq!(s, 400, "{host}: {b}");
        assert_eq!(body_json(&b)["error"]["code"], "bad_request");
    }
    let r = node
        .http
        .get(format!("{}/metrics", node.control))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = node
        .http
        .get(format!("{}/metrics", node.control))
        .bearer_auth(common::TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_node_serves(&mut node);
}

/// `edged dev` on free ports: (child, data URL, control URL).
fn dev_node(dir: &std::path::Path) -> (std::process::Child, String, String) {
    use std::io::BufRead;
    let script = dir.join("w.js");
    std::fs::write(
        &script,
        "export default { fetch() { return new Response('dev'); } }",
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
        .args(["dev"])
        .arg(&script)
        .args(["--port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut data, mut control) = (String::new(), String::new());
    while data.is_empty() || control.is_empty() {
        let line = lines.next().expect("dev announced its ports").unwrap();
        if let Some(a) = line.strip_prefix("edged: data plane listening on ") {
            data = a.to_owned();
        }
        if let Some(a) = line.strip_prefix("edged: control plane listening on ") {
            control = a.to_owned();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, data, control)
}

#[test]
fn dev_control_plane_refuses_web_pages_and_rebound_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _data, control) = dev_node(dir.path());
    let http = reqwest::blocking::Client::new();
    let deploy = |host: Option<&str>, origin: Option<&str>| {
        let mut req = http.put(format!("{control}/v1/workers/evil")).json(&json!({
            "main_module": "w.js", "modules": {"w.js": "export default { fetch() { return new Response('pwned'); } }"}
        }));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let port = control.rsplit(':').next().unwrap().to_owned();
    for (host, origin) in [
        (Some(format!("evil.example:{port}")), None),
        (Some(format!("127.0.0.1.nip.io:{port}")), None),
        (None, Some("http://evil.example".to_owned())),
        (None, Some("null".to_owned())),
    ] {
        let (s, b) = deploy(host.as_deref(), origin.as_deref());
        assert_eq!(s, 403, "{host:?} {origin:?}: {b}");
        assert_eq!(b["error"]["code"], "forbidden");
    }
    // Its own tools (no Origin, loopback Host) still work without a token.
    let (s, b) = deploy(None, None);
    assert_eq!(s, 200, "{b}");
    let same_origin = format!("http://127.0.0.1:{port}");
    let (s, b) = deploy(None, Some(&same_origin));
    assert_eq!(s, 200, "{b}");
    let _ = child.kill();
    let _ = child.wait();
}
