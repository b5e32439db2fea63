//! End-to-end: the control plane's deploy API and the data plane's routing, against
//! a real node process.

mod common;

use common::{TestNode, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const HELLO_V1: &str = "export default { fetch() { return new Response('v1'); } }";
const HELLO_V2: &str = "export default { fetch() { return new Response('v2'); } }";

#[test]
fn deploy_list_get_delete() {
    let node = TestNode::start();
    let (status, body) = node.deploy(
        "api",
        "export default { fetch(req, env) { return new Response(env.GREETING + ' ' + env.KEY.length); } }",
        json!([
            {"type":"plain_text","name":"GREETING","text":"hi"},
            {"type":"secret_text","name":"KEY","text":"s3cr3t"},
            {"type":"kv_namespace","name":"CACHE","namespace":"cache"},
            {"type":"durable_object_namespace","name":"ROOMS","class_name":"ChatRoom"}
        ]),
        &["api.example.com/*"],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name":"api","version":1,"routes":["api.example.com/*"],"warnings":[]})
    );

    assert_eq!(node.get("api.example.com", "/x"), (200, "hi 6".to_owned()));
    assert_eq!(node.get_worker("api", "/"), (200, "hi 6".to_owned()));

    let (status, list) = node.control_request(Method::GET, "/v1/workers", None);
    assert_eq!(status, 200);
    assert_eq!(list["workers"][0]["name"], "api");
    assert_eq!(list["workers"][0]["version"], 1);

    let (status, detail) = node.control_request(Method::GET, "/v1/workers/api", None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["versions"], json!([1]));
    assert_eq!(detail["routes"], json!(["api.example.com/*"]));
    let text = detail.to_string();
    assert!(!text.contains("s3cr3t"), "secret echoed: {text}");
    assert!(detail["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "KEY" && b["type"] == "secret_text"));

    let (status, _) = node.control_request(Method::DELETE, "/v1/workers/api", None);
    assert_eq!(status, 200);
    let (status, body) = node.get("api.example.com", "/x");
    assert_eq!(status, 404, "{body}");
    let (status, _) = node.control_request(Method::GET, "/v1/workers/api", None);
    assert_eq!(status, 404);
    let (status, err) = node.control_request(Method::DELETE, "/v1/workers/api", None);
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
}

#[test]
fn bad_scripts_are_rejected_and_the_old_version_keeps_serving() {
    let node = TestNode::start();
    node.deploy_ok("app", HELLO_V1);

    let (status, err) = node.deploy(
        "app",
        "export default {\n  fetch() { return 1 +; }\n};",
        json!([]),
        &[],
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "script_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("SyntaxError"), "{msg}");
    assert!(msg.contains("(worker.js:2:"), "{msg}");

    let (status, err) = node.deploy(
        "app",
        "throw new RangeError('boom at top');\nexport default {};",
        json!([]),
        &[],
    );
    assert_eq!(status, 400);
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("RangeError: boom at top"), "{msg}");
    assert!(msg.contains("worker.js:1:"), "{msg}");

    let (status, err) = node.deploy("app", "export const x = 1;", json!([]), &[]);
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "script_error");

    let (status, err) = node.deploy(
        "app",
        "import x from 'ext:core/ops'; export default {fetch(){return new Response('x')}};",
        json!([]),
        &[],
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "script_error");

    let (status, err) = node.deploy("app", "while (true) {}", json!([]), &[]);
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("CPU"),
        "{err}"
    );

    assert_eq!(node.get_worker("app", "/"), (200, "v1".to_owned()));
    let (_, detail) = node.control_request(Method::GET, "/v1/workers/app", None);
    assert_eq!(
        detail["versions"],
        json!([1]),
        "a rejected version must not be stored"
    );
}

#[test]
fn malformed_requests_get_the_error_shape_and_change_nothing() {
    let node = TestNode::start_with("request_body_mb = 1\n");
    node.deploy_ok("keep", HELLO_V1);
    let put = |name: &str, body: &str| {
        let resp = node
            .http
            .put(format!("{}/v1/workers/{name}", node.control))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().unwrap())
    };
    let (s, e) = put("keep", "{not json");
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_request")));
    let (s, e) = put(
        "Bad_Name",
        r#"{"main_module":"w.js","modules":{"w.js":""}}"#,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );
    let (s, e) = put(
        &"a".repeat(64),
        r#"{"main_module":"w.js","modules":{"w.js":""}}"#,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );
    let (s, e) = put(
        "keep",
        r#"{"main_module":"w.js","modules":{"w.js":"export default {}"},"bindings":[{"type":"queue","name":"Q"}]}"#,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_binding")),
        "{e}"
    );
    let (s, e) = put(
        "keep",
        r#"{"main_module":"w.js","modules":{"w.js":"export default {}"},"routes":["no-path.example.com"]}"#,
    );
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_route")),
        "{e}"
    );
    let (s, e) = put(
        "keep",
        r#"{"main_module":"missing.js","modules":{"w.js":""}}"#,
    );
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("bad_request")));

    // A body over the limit (1 MiB here) is refused before it is buffered.
    let big = node
        .http
        .put(format!("{}/v1/workers/keep", node.control))
        .bearer_auth(TOKEN)
        .body(vec![b' '; 2 << 20])
        .send();
    if let Ok(resp) = big {
        assert_eq!(resp.status().as_u16(), 413);
        let e: serde_json::Value = resp.json().unwrap();
        assert_eq!(e["error"]["code"], "payload_too_large");
    }

    assert_eq!(node.get_worker("keep", "/"), (200, "v1".to_owned()));
    let (_, detail) = node.control_request(Method::GET, "/v1/workers/keep", None);
    assert_eq!(detail["versions"], json!([1]));
}

#[test]
fn control_plane_requires_the_token() {
    let node = TestNode::start();
    let resp = node
        .http
        .get(format!("{}/v1/workers", node.control))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let resp = node
        .http
        .put(format!("{}/v1/workers/x", node.control))
        .bearer_auth("wrong")
        .json(&json!({"main_module":"w.js","modules":{"w.js":HELLO_V1}}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let (status, _) = node.get_worker("x", "/");
    assert_eq!(status, 404, "nothing was deployed");
    // Health and metrics stay open for load balancers and Prometheus.
    assert_eq!(
        node.http
            .get(format!("{}/healthz", node.control))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn unknown_host_is_a_json_404() {
    let node = TestNode::start();
    node.deploy("a", HELLO_V1, json!([]), &["a.example.com/*"]);
    let (status, body) = node.get("nobody.example.net", "/x");
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}

#[test]
fn route_precedence() {
    let node = TestNode::start();
    let echo =
        |tag: &str| format!("export default {{ fetch() {{ return new Response('{tag}'); }} }}");
    for (name, route) in [
        ("catchall", "*/*"),
        ("wild", "*.example.com/*"),
        ("api", "api.example.com/*"),
        ("v2", "api.example.com/v2/*"),
        ("health", "api.example.com/v2/health"),
    ] {
        let (s, b) = node.deploy(name, &echo(name), json!([]), &[route]);
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(node.get("api.example.com", "/x").1, "api");
    assert_eq!(node.get("api.example.com", "/v2/x").1, "v2");
    assert_eq!(node.get("api.example.com", "/v2/health").1, "health");
    assert_eq!(node.get("www.example.com", "/").1, "wild");
    assert_eq!(node.get("deep.www.example.com", "/").1, "wild");
    assert_eq!(node.get("example.org", "/").1, "catchall");
    assert_eq!(node.get("API.EXAMPLE.COM:8080", "/v2/x").1, "v2");

    // The same route twice is a conflict, not a silent takeover.
    let (s, e) = node.deploy("other", &echo("other"), json!([]), &["api.example.com/*"]);
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "route_conflict");

    // Redeploying a worker without a route releases it.
    node.deploy("v2", &echo("v2b"), json!([]), &[]);
    assert_eq!(node.get("api.example.com", "/v2/x").1, "api");
}

#[test]
fn rollback_and_restart() {
    let mut node = TestNode::start();
    node.deploy_ok("app", HELLO_V1);
    let v2 = node.deploy_ok("app", HELLO_V2);
    assert_eq!(v2["version"], 2);
    assert_eq!(node.get_worker("app", "/").1, "v2");

    let (status, body) = node.control_request(Method::POST, "/v1/workers/app/rollback", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(node.get_worker("app", "/").1, "v1");

    let (status, body) = node.control_request(Method::POST, "/v1/workers/app/rollback", None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "no_previous_version");

    node.deploy("routed", HELLO_V2, json!([]), &["routed.example.com/*"]);

    node.restart();
    assert_eq!(
        node.get_worker("app", "/").1,
        "v1",
        "rolled-back version survives restart"
    );
    assert_eq!(
        node.get("routed.example.com", "/").1,
        "v2",
        "routes survive restart"
    );
    let v3 = node.deploy_ok(
        "app",
        "export default { fetch() { return new Response('v3'); } }",
    );
    assert_eq!(v3["version"], 3, "version numbers continue after restart");
}

#[test]
fn redeploy_under_load_has_no_errors() {
    let node = TestNode::start();
    node.deploy_ok("live", HELLO_V1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..8 {
        let stop = stop.clone();
        let url = format!("{}/", node.data);
        handles.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let (mut ok, mut bad, mut seen) = (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .get(&url)
                    .header("host", "live.workers.localhost")
                    .send()
                {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        seen.insert(r.text().unwrap_or_default());
                    }
                    Ok(r) => bad.push(r.status().as_u16()),
                    Err(e) => bad.push(if e.is_connect() { 1 } else { 0 }),
                }
            }
            (ok, bad, seen)
        }));
    }
    for i in 2..=6 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let src = format!("export default {{ fetch() {{ return new Response('v{i}'); }} }}");
        node.deploy_ok("live", &src);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut versions = std::collections::BTreeSet::new();
    for h in handles {
        let (ok, bad, seen) = h.join().unwrap();
        assert!(bad.is_empty(), "non-2xx responses during redeploy: {bad:?}");
        total += ok;
        versions.extend(seen);
    }
    assert!(total > 50, "too few requests to mean anything: {total}");
    assert!(versions.contains("v6"), "{versions:?}");
    assert_eq!(node.get_worker("live", "/").1, "v6");
}

#[test]
fn compatibility_dates_and_flags_are_checked_as_workerd_checks_them() {
    let node = TestNode::start();
    let deploy = |flags: Value, date: &str| {
        node.deploy_body(
            "compat",
            &json!({
                "main_module": "worker.js",
                "modules": { "worker.js": "export default { fetch() { return new Response('v'); } };" },
                "compatibility_date": date,
                "compatibility_flags": flags,
            }),
        )
    };
    // Known flags deploy; the ones edged does not act on are named in a warning.
    let (status, body) = deploy(
        json!([
            "nodejs_compat",
            "nodejs_zlib",
            "web_socket_auto_reply_to_close"
        ]),
        "2024-09-23",
    );
    assert_eq!(status, 200, "{body}");
    let warnings = body["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{body}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("nodejs_zlib")
            && !w.contains("nodejs_compat")
            && !w.contains("web_socket_auto_reply_to_close"),
        "{w}"
    );
    let (_, got) = node.control_request(Method::GET, "/v1/workers/compat", None);
    assert_eq!(
        got["compatibility_flags"],
        json!([
            "nodejs_compat",
            "nodejs_zlib",
            "web_socket_auto_reply_to_close"
        ])
    );
    // Refusals: each a 400 naming the problem, and the deployed version serves on.
    for (flags, date, code, says) in [
        (
            json!(["nodejs_compat_but_not"]),
            "2024-09-23",
            "unknown_compatibility_flag",
            "No such compatibility flag: nodejs_compat_but_not",
        ),
        (
            json!(["nodejs_compat", "no_nodejs_compat"]),
            "2024-09-23",
            "conflicting_compatibility_flags",
            "nodejs_compat and no_nodejs_compat conflict",
        ),
        (
            json!([]),
            "2024-02-30",
            "invalid_compatibility_date",
            "Invalid compatibility date",
        ),
        (
            json!([]),
            "2999-01-01",
            "invalid_compatibility_date",
            "in the future",
        ),
    ] {
        let (status, body) = deploy(flags, date);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        node.get("compat.workers.localhost", "/"),
        (200, "v".to_owned())
    );
}

#[test]
fn the_version_metadata_binding_names_the_running_version() {
    let node = TestNode::start();
    let source =
        "export default { fetch(req, env) { return Response.json(env.CF_VERSION_METADATA); } };";
    let bindings = json!([{"type":"version_metadata","name":"CF_VERSION_METADATA"}]);
    let meta = || {
        let (status, body) = node.get("meta.workers.localhost", "/");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).expect("json")
    };
    let (status, body) = node.deploy("meta", source, bindings.clone(), &[]);
    assert_eq!(status, 200, "{body}");
    let first = meta();
    let id = first["id"].as_str().expect("id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(id.matches('-').count(), 4, "a UUID: {id}");
    assert_eq!(first["tag"], "");
    let ts = first["timestamp"].as_str().expect("timestamp");
    let year: i32 = ts[..4].parse().expect("ISO 8601");
    assert!(
        year >= 2024 && ts.ends_with('Z') && ts.contains('T'),
        "{ts}"
    );
    let (status, _) = node.deploy("meta", source, bindings, &[]);
    assert_eq!(status, 200);
    let second = meta();
    assert_ne!(second["id"], first["id"], "a new version has a new id");
}

/// `(i32, i32) -> i32` exported as `add`.
const ADD_WASM: [u8; 41] = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01,
    0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64, 0x00, 0x00, 0x0a, 0x09,
    0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
];

#[test]
fn module_types_text_data_json_wasm_and_commonjs() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let node = TestNode::start();
    let main = r#"
import wasm from "./add.wasm";
import text from "./hello.txt";
import data from "./blob.bin";
import cfg from "./cfg.json";
import lib from "./lib/index.cjs";
export default {
  async fetch() {
    const instance = await WebAssembly.instantiate(wasm, {});
    let refused = "none";
    try {
      await WebAssembly.compile(new Uint8Array(data));
    } catch (e) {
      refused = e.constructor.name + ": " + e.message;
    }
    return Response.json({
      isModule: wasm instanceof WebAssembly.Module,
      add: instance.exports.add(2, 3),
      text,
      isBuffer: data instanceof ArrayBuffer,
      data: [...new Uint8Array(data)],
      cfg,
      lib,
      refused,
    });
  },
};
"#;
    let body = json!({
        "main_module": "worker.js",
        "modules": {
            "worker.js": main,
            "add.wasm": {"type": "wasm", "content_base64": b64(&ADD_WASM)},
            "hello.txt": {"type": "text", "content": "héllo\n\u{2028}"},
            "blob.bin": {"type": "data", "content_base64": b64(&[0, 1, 2, 255])},
            "cfg.json": {"type": "json", "content": "{\"name\": \"cfg\", \"__proto__\": {\"x\": 1}}"},
            "lib/index.cjs": {"type": "commonjs", "content": "const u = require('./util'); const again = require('./util.cjs'); module.exports = { sum: u.sum(1, 2), same: u === again, text: require('../hello.txt'), cfg: require('../cfg.json').name, self: typeof __filename + ':' + __filename };"},
            "lib/util.cjs": {"type": "commonjs", "content": "exports.sum = (a, b) => a + b;"},
        },
    });
    let (status, out) = node.deploy_body("types", &body);
    assert_eq!(status, 200, "{out}");
    let (status, text) = node.get_worker("types", "/");
    assert_eq!(status, 200, "{text}");
    let got: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(got["isModule"], true, "{got}");
    assert_eq!(got["add"], 5);
    assert_eq!(got["text"], "héllo\n\u{2028}");
    assert_eq!(got["isBuffer"], true);
    assert_eq!(got["data"], json!([0, 1, 2, 255]));
    assert_eq!(got["cfg"]["name"], "cfg");
    assert_eq!(
        got["cfg"]["__proto__"]["x"], 1,
        "JSON is parsed, not evaluated as an object literal"
    );
    assert_eq!(
        got["lib"],
        json!({"sum": 3, "same": true, "text": "héllo\n\u{2028}", "cfg": "cfg", "self": "string:lib/index.cjs"})
    );
    assert!(
        got["refused"]
            .as_str()
            .is_some_and(|r| r.starts_with("CompileError")),
        "WebAssembly from bytes at run time is refused: {got}"
    );

    // Refusals: each a 400 naming the module, and nothing deployed.
    let refuse = |modules: Value, main: &str, code: &str, needle: &str| {
        let (status, err) = node.deploy_body(
            "types-bad",
            &json!({"main_module": main, "modules": modules}),
        );
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], code, "{err}");
        let msg = err["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} in {msg}");
    };
    let ok = "export default { fetch() { return new Response('x'); } };";
    refuse(
        json!({"w.js": ok, "a.bin": {"type": "data", "content_base64": "%%%"}}),
        "w.js",
        "invalid_module",
        "'a.bin'",
    );
    refuse(
        json!({"w.js": ok, "a.wasm": {"type": "wasm", "content_base64": b64(b"not wasm")}}),
        "w.js",
        "invalid_module",
        "WebAssembly",
    );
    refuse(
        json!({"w.js": ok, "a.json": {"type": "json", "content": "{nope"}}),
        "w.js",
        "invalid_module",
        "JSON",
    );
    refuse(
        json!({"w.js": ok, "a.x": {"type": "python", "content": ""}}),
        "w.js",
        "invalid_module",
        "'a.x'",
    );
    refuse(
        json!({"w.txt": {"type": "text", "content": ok}}),
        "w.txt",
        "invalid_module",
        "must be an ES module",
    );
    // Starts like WebAssembly, does not compile: the deploy's script error.
    refuse(
        json!({"w.js": format!("import m from './a.wasm'; {ok}"), "a.wasm": {"type": "wasm", "content_base64": b64(&ADD_WASM[..20])}}),
        "w.js",
        "script_error",
        "a.wasm",
    );
    // A CommonJS module requiring what is not there throws as Node's does.
    refuse(
        json!({"w.js": format!("import m from './a.cjs'; {ok}"), "a.cjs": {"type": "commonjs", "content": "require('./missing')"}}),
        "w.js",
        "script_error",
        "No such module \"./missing\"",
    );
    let (status, _) = node.control_request(Method::GET, "/v1/workers/types-bad", None);
    assert_eq!(status, 404);
}

/// Content-Encoding as Workers does it: a gzip or br header on a plain body
/// is applied by the runtime; `encodeBody: "manual"` sends the body as it
/// is; a client that does not take the coding gets the plain body.
#[test]
fn content_encoding_is_applied_unless_the_body_is_encoded_manually() {
    use tokio::io::AsyncReadExt;
    let node = TestNode::start();
    node.deploy_ok(
        "enc",
        r#"export default {
          async fetch(request) {
            const path = new URL(request.url).pathname;
            const text = "edged ".repeat(2000);
            if (path === "/gzip") return new Response(text, { headers: { "content-encoding": "gzip", "content-length": String(text.length) } });
            if (path === "/br") return new Response(text, { headers: { "content-encoding": "br" } });
            if (path === "/stream") {
              const body = new Response(text).body;
              return new Response(body, { headers: { "content-encoding": "gzip" } });
            }
            if (path === "/manual") {
              const gz = new Response(new Response(text).body.pipeThrough(new CompressionStream("gzip")));
              const bytes = await gz.arrayBuffer();
              const r = new Response(bytes, { encodeBody: "manual", headers: { "content-encoding": "gzip" } });
              return new Response(r.body, r);
            }
            if (path === "/bad") {
              try { new Response("x", { encodeBody: "sometimes" }); } catch (e) { return new Response(e.constructor.name); }
            }
            return new Response(text);
          },
        };"#,
    );
    let get = |path: &str, accept: &str| {
        let resp = node
            .http
            .get(format!("{}{path}", node.data))
            .header("host", "enc.workers.localhost")
            .header("accept-encoding", accept)
            .send()
            .expect("request");
        let encoding = resp
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (
            resp.status().as_u16(),
            encoding,
            resp.bytes().expect("body").to_vec(),
        )
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let gunzip = |bytes: &[u8]| {
        let mut out = String::new();
        rt.block_on(
            async_compression::tokio::bufread::GzipDecoder::new(bytes).read_to_string(&mut out),
        )
        .expect("gunzip");
        out
    };
    let text = "edged ".repeat(2000);
    for path in ["/gzip", "/stream", "/manual"] {
        let (status, encoding, body) = get(path, "gzip, deflate, br");
        assert_eq!(status, 200, "{path}");
        assert_eq!(encoding.as_deref(), Some("gzip"), "{path}");
        assert!(body.len() < text.len() / 4, "{path}: {} bytes", body.len());
        assert_eq!(gunzip(&body), text, "{path}");
    }
    let (_, encoding, body) = get("/br", "br");
    assert_eq!(encoding.as_deref(), Some("br"));
    let mut out = String::new();
    rt.block_on(
        async_compression::tokio::bufread::BrotliDecoder::new(&body[..]).read_to_string(&mut out),
    )
    .expect("unbrotli");
    assert_eq!(out, text);
    // A client that takes no gzip: the plain body, no Content-Encoding.
    let (_, encoding, body) = get("/gzip", "identity");
    assert_eq!(encoding, None);
    assert_eq!(body, text.as_bytes());
    // No header of the worker's: nothing is compressed.
    let (_, encoding, body) = get("/plain", "gzip");
    assert_eq!(encoding, None);
    assert_eq!(body, text.as_bytes());
    assert_eq!(get("/bad", "gzip").2, b"TypeError");
}
