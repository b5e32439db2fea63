//! End-to-end: the first part of the Workers API, through the data plane.
//!
//! One worker exposes one path per API; the assertions sit partly in the worker
//! (JS checks that return what they saw) and partly here (what reached the
//! client over HTTP).

mod common;

use common::TestNode;
use serde_json::{json, Value};

const WORKER: &str = r#"
import { DurableObject, WorkerEntrypoint, env as cfEnv } from "cloudflare:workers";
import { double } from "./lib/util.js";

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/request": {
        const body = await request.text();
        return Response.json({
          method: request.method,
          url: request.url,
          search: url.searchParams.get("q"),
          contentType: request.headers.get("Content-Type"),
          custom: request.headers.get("x-custom"),
          body,
          isRequest: request instanceof Request,
          bodyUsed: request.bodyUsed,
        });
      }
      case "/echo-binary": {
        const buf = new Uint8Array(await request.arrayBuffer());
        const out = buf.map((b) => 255 - b);
        return new Response(out, { headers: { "content-type": "application/octet-stream" } });
      }
      case "/response": {
        return new Response("created!", {
          status: 201,
          statusText: "Made It",
          headers: { "X-One": "1", "x-two": "2" },
        });
      }
      case "/json": return Response.json({ ok: true, n: 42 }, { status: 202 });
      case "/redirect": return Response.redirect("https://example.com/elsewhere", 301);
      case "/redirect-default": return Response.redirect("https://example.com/x");
      case "/null-body": return new Response(null, { status: 204 });
      case "/bodies": {
        const r1 = new Response('{"a":1}');
        const j = await r1.json();
        const r2 = new Response("abc");
        const ab = await r2.arrayBuffer();
        let reused = false;
        try { await r2.text(); } catch (e) { reused = e instanceof TypeError; }
        const r3 = new Response(null);
        return Response.json({
          json: j, abLen: ab.byteLength, reusedThrows: reused,
          nullText: await r3.text(), nullBody: r3.body === null,
          okFlag: new Response("", { status: 299 }).ok, notOk: new Response("", { status: 404 }).ok,
        });
      }
      case "/headers": {
        const h = new Headers({ "Content-Type": "text/plain" });
        h.append("Set-Cookie", "a=1");
        h.append("Set-Cookie", "b=2");
        h.append("Accept", "x");
        h.append("accept", "y");
        const out = new Response("cookies", { headers: h });
        let badName = false;
        try { new Headers({ "bad name": "x" }); } catch (e) { badName = e instanceof TypeError; }
        return Response.json({
          ct: h.get("content-type"),
          has: h.has("CONTENT-TYPE"),
          accept: h.get("ACCEPT"),
          cookies: h.getSetCookie(),
          keys: [...h.keys()],
          badName,
        }, { headers: out.headers });
      }
      case "/url": {
        const u = new URL("../b/c?x=1&y=2#frag", "https://user:pw@EXAMPLE.com:8443/a/z");
        const p = new URLSearchParams("a=1&b=2&a=3");
        p.append("c", "d e");
        p.sort();
        let invalid = false;
        try { new URL("not a url"); } catch (e) { invalid = e instanceof TypeError; }
        return Response.json({
          href: u.href, host: u.host, hostname: u.hostname, port: u.port,
          pathname: u.pathname, search: u.search, hash: u.hash, origin: u.origin,
          username: u.username, all: p.getAll("a"), params: p.toString(), invalid,
          idna: new URL("https://münchen.de/").hostname,
          canParse: URL.canParse("https://x.y"),
        });
      }
      case "/encoding": {
        const bytes = new TextEncoder().encode("héllo €");
        const text = new TextDecoder().decode(bytes);
        const latin = new TextDecoder("utf-8").decode(new Uint8Array([0xff, 0x41]));
        let badB64 = false;
        try { atob("***"); } catch (e) { badB64 = e.name === "InvalidCharacterError"; }
        return Response.json({
          len: bytes.length, text, latin, b64: btoa("hello"), unb64: atob("aGVsbG8="), badB64,
        });
      }
      case "/crypto": {
        const a = crypto.randomUUID();
        const b = crypto.randomUUID();
        const buf = crypto.getRandomValues(new Uint8Array(32));
        let tooBig = false;
        try { crypto.getRandomValues(new Uint8Array(70000)); } catch (e) { tooBig = e.name === "QuotaExceededError"; }
        return Response.json({
          a, b, distinct: a !== b,
          v4: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(a),
          nonZero: buf.some((x) => x !== 0), tooBig,
        });
      }
      case "/env":
        return Response.json({
          greeting: env.GREETING, secret: env.API_KEY, same: cfEnv === env,
          keys: Object.keys(env).sort(), frozen: Object.isFrozen(env),
        });
      case "/globals":
        return Response.json({
          deno: typeof Deno, internals: typeof globalThis.__edged_internals,
          self: self === globalThis, ctx: typeof ctx.waitUntil,
          doClass: typeof DurableObject, entrypoint: typeof WorkerEntrypoint,
          lib: double(21), structured: structuredClone({ m: new Map([[1, 2]]) }).m.get(1),
        });
      case "/console":
        console.log("log line", { marker: "console-marker-1" });
        console.warn("warn line console-marker-2");
        await new Promise((r) => setTimeout(r, 5));
        console.error("after await console-marker-3");
        return new Response("logged");
      case "/throw": throw new Error("secret internal detail");
      case "/reject": return Promise.reject(new TypeError("rejected detail"));
      case "/not-a-response": return { hello: "world" };
      case "/unhandled":
        Promise.reject(new Error("stray rejection"));
        return new Response("still fine");
      case "/wait-until": {
        ctx.waitUntil(new Promise((r) => setTimeout(r, 10)).then(() => console.log("waitUntil done console-marker-4")));
        return new Response("sent");
      }
      default: return new Response("not found", { status: 404 });
    }
  },
};
"#;

const LIB: &str = "export function double(x) { return x * 2; }";

fn start() -> TestNode {
    let node = TestNode::start();
    let (status, body) = node.deploy_body(
        "api",
        &json!({
            "main_module": "worker.js",
            "modules": { "worker.js": WORKER, "lib/util.js": LIB },
            "bindings": [
                {"type":"plain_text","name":"GREETING","text":"hello"},
                {"type":"secret_text","name":"API_KEY","text":"s3cr3t"}
            ],
        }),
    );
    assert_eq!(status, 200, "{body}");
    node
}

fn get_json(node: &TestNode, path: &str) -> Value {
    let (status, body) = node.get_worker("api", path);
    assert!(status < 300, "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn workers_api_first_part() {
    let node = start();
    let url = |p: &str| format!("{}{p}", node.data);
    let host = "api.workers.localhost";

    // Request: method, URL, headers, body.
    let resp = node
        .http
        .post(url("/request?q=find+me"))
        .header("host", host)
        .header("content-type", "text/plain")
        .header("X-Custom", "yes")
        .body("posted body")
        .send()
        .unwrap();
    let v: Value = resp.json().unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["url"], "http://api.workers.localhost/request?q=find+me");
    assert_eq!(v["search"], "find me");
    assert_eq!(v["contentType"], "text/plain");
    assert_eq!(v["custom"], "yes");
    assert_eq!(v["body"], "posted body");
    assert_eq!(v["isRequest"], true);
    assert_eq!(v["bodyUsed"], true);

    // Binary bodies round-trip byte for byte.
    let input: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let resp = node
        .http
        .put(url("/echo-binary"))
        .header("host", host)
        .body(input.clone())
        .send()
        .unwrap();
    let out = resp.bytes().unwrap();
    assert_eq!(out.len(), input.len());
    assert!(out.iter().zip(&input).all(|(o, i)| *o == 255 - *i));

    // Response: status, statusText, headers.
    let resp = node
        .http
        .get(url("/response"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["x-one"], "1");
    assert_eq!(resp.headers()["x-two"], "2");
    assert_eq!(resp.text().unwrap(), "created!");

    let resp = node
        .http
        .get(url("/json"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(resp.json::<Value>().unwrap(), json!({"ok": true, "n": 42}));

    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .get(url("/redirect"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(resp.headers()["location"], "https://example.com/elsewhere");
    let resp = no_redirects
        .get(url("/redirect-default"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);

    let resp = node
        .http
        .get(url("/null-body"))
        .header("host", host)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.text().unwrap(), "");

    let v = get_json(&node, "/bodies");
    assert_eq!(
        v,
        json!({"json":{"a":1},"abLen":3,"reusedThrows":true,"nullText":"","nullBody":true,"okFlag":true,"notOk":false})
    );

    // Headers: case-insensitive, multi-value, getSetCookie; Set-Cookie reaches the
    // client as separate header lines.
    let resp = node
        .http
        .get(url("/headers"))
        .header("host", host)
        .send()
        .unwrap();
    let cookies: Vec<_> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, vec!["a=1", "b=2"]);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["ct"], "text/plain");
    assert_eq!(v["has"], true);
    assert_eq!(v["accept"], "x, y");
    assert_eq!(v["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(
        v["keys"],
        json!(["accept", "content-type", "set-cookie", "set-cookie"])
    );
    assert_eq!(v["badName"], true);

    // URL and URLSearchParams: WHATWG parsing.
    let v = get_json(&node, "/url");
    assert_eq!(
        v["href"],
        "https://user:pw@example.com:8443/b/c?x=1&y=2#frag"
    );
    assert_eq!(v["host"], "example.com:8443");
    assert_eq!(v["hostname"], "example.com");
    assert_eq!(v["port"], "8443");
    assert_eq!(v["pathname"], "/b/c");
    assert_eq!(v["search"], "?x=1&y=2");
    assert_eq!(v["hash"], "#frag");
    assert_eq!(v["origin"], "https://example.com:8443");
    assert_eq!(v["username"], "user");
    assert_eq!(v["all"], json!(["1", "3"]));
    assert_eq!(v["params"], "a=1&a=3&b=2&c=d+e");
    assert_eq!(v["invalid"], true);
    assert_eq!(v["idna"], "xn--mnchen-3ya.de");
    assert_eq!(v["canParse"], true);

    // TextEncoder/TextDecoder, atob/btoa.
    let v = get_json(&node, "/encoding");
    assert_eq!(
        v,
        json!({"len": 10, "text": "héllo €", "latin": "\u{FFFD}A", "b64": "aGVsbG8=", "unb64": "hello", "badB64": true})
    );

    // crypto.randomUUID, crypto.getRandomValues.
    let v = get_json(&node, "/crypto");
    assert_eq!(v["distinct"], true);
    assert_eq!(v["v4"], true, "{v}");
    assert_eq!(v["nonZero"], true);
    assert_eq!(v["tooBig"], true);

    // env: plain text and secret bindings; cloudflare:workers exports the same env.
    let v = get_json(&node, "/env");
    assert_eq!(
        v,
        json!({"greeting":"hello","secret":"s3cr3t","same":true,"keys":["API_KEY","GREETING"],"frozen":true})
    );

    // The global scope: no Deno, no runtime internals; modules import each other.
    let v = get_json(&node, "/globals");
    assert_eq!(
        v,
        json!({"deno":"undefined","internals":"undefined","self":true,"ctx":"function","doClass":"function","entrypoint":"function","lib":42,"structured":2})
    );
}

#[test]
fn console_errors_and_non_responses() {
    let node = start();

    assert_eq!(
        node.get_worker("api", "/console"),
        (200, "logged".to_owned())
    );
    assert_eq!(
        node.get_worker("api", "/wait-until"),
        (200, "sent".to_owned())
    );

    // A thrown error: 500 with a generic body; the stack goes to the log.
    for path in ["/throw", "/reject"] {
        let (status, body) = node.get_worker("api", path);
        assert_eq!(status, 500, "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "worker_exception");
        assert!(
            !body.contains("detail"),
            "error detail leaked to the client: {body}"
        );
    }
    let (status, body) = node.get_worker("api", "/not-a-response");
    assert_eq!(status, 500);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "worker_bad_response"
    );

    // A stray rejection is logged; the isolate keeps serving.
    assert_eq!(
        node.get_worker("api", "/unhandled"),
        (200, "still fine".to_owned())
    );
    assert_eq!(node.get_worker("api", "/json").0, 202);

    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = node.log();
    let line = |marker: &str| {
        log.lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no log line with {marker}:\n{log}"))
            .to_owned()
    };
    let first = line("console-marker-1");
    assert!(
        first.contains("INFO") && first.contains("worker=api") && first.contains("request_id="),
        "{first}"
    );
    let request_id = |l: &str| {
        l.split("request_id=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    };
    assert!(line("console-marker-2").contains("WARN"));
    let third = line("console-marker-3");
    assert!(third.contains("ERROR"));
    assert_eq!(
        request_id(&first),
        request_id(&third),
        "request id must survive an await"
    );
    assert_ne!(request_id(&first), Some("0".to_owned()));
    assert!(line("console-marker-4").contains("worker=api"));
    assert!(line("secret internal detail").contains("worker threw an exception"));
    assert!(line("rejected detail").contains("TypeError"));
    assert!(line("worker returned no Response").contains("an object of type Object"));
    assert!(line("stray rejection").contains("Uncaught (in promise)"));
}

/// A request asking for a WebSocket upgrade reaches the worker as a normal
/// request, and whatever plain response the worker gives (or its failure)
/// reaches the client at once: the upgrade's open-ended "body" is never
/// waited for.
#[test]
fn an_upgrade_request_answered_plainly_does_not_hang() {
    use std::io::{Read, Write};
    let node = TestNode::start();
    node.deploy_ok(
        "upgrader",
        "export default { fetch(req) { \
           if (new URL(req.url).pathname === '/throw') throw new Error('no sockets here'); \
           return new Response('plain ' + req.headers.get('upgrade'), { status: 426 }); } }",
    );
    let addr = node.data.trim_start_matches("http://").to_owned();
    for (path, status) in [("/", "426"), ("/throw", "500")] {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: upgrader.workers.localhost\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = tcp
                .read(&mut buf)
                .expect("an answer within 10 s, not a hang");
            assert!(n > 0, "closed without an answer");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {text}"
        );
    }
}
