//! End-to-end: service bindings (fetch and `WorkerEntrypoint` RPC between workers
//! of one node) and Cron Triggers (`scheduled()` on schedule and on demand).

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use reqwest::Method;
use serde_json::{json, Value};

const AUTH: &str = r#"
import { WorkerEntrypoint } from "cloudflare:workers";
export default class Auth extends WorkerEntrypoint {
  async fetch(request) {
    return new Response(`auth saw ${request.method} ${new URL(request.url).pathname} token=${request.headers.get("x-token")} body=${await request.text()}`, {
      status: 202,
      headers: { "x-auth": "1" },
    });
  }
  async check(token) {
    return { ok: token === "secret", by: this.env.WHO, at: new Date(0), tags: new Set(["a"]) };
  }
  async fail() {
    throw new RangeError("no such user");
  }
}
// A named entrypoint, bound with `"entrypoint": "Admin"`.
export class Admin extends WorkerEntrypoint {
  fetch(request) {
    return new Response(`admin ${this.env.WHO} ${new URL(request.url).pathname} ${JSON.stringify(this.ctx.props)}`);
  }
  ban(user) {
    return `banned ${user} by ${this.ctx.props.role}`;
  }
}
export class NotAnEntrypoint {}
"#;

const FRONT: &str = r#"
export default {
  async fetch(request, env) {
    const u = new URL(request.url);
    const out = async (f) => {
      try {
        return new Response(await f());
      } catch (e) {
        return new Response(`${e.name}: ${e.message}`, { status: 502 });
      }
    };
    switch (u.pathname) {
      case "/fetch":
        return out(async () => {
          const r = await env.AUTH.fetch("https://auth.internal/verify", { method: "POST", body: "hi", headers: { "x-token": "t1" } });
          return `${r.status} ${r.headers.get("x-auth")} ${await r.text()}`;
        });
      case "/rpc":
        return out(async () => {
          const v = await env.AUTH.check(u.searchParams.get("t"));
          return `${v.ok} ${v.by} ${v.at instanceof Date} ${v.tags.has("a")}`;
        });
      case "/rpc-throws":
        return out(() => env.AUTH.fail());
      case "/rpc-missing":
        return out(() => env.AUTH.nope());
      case "/loop":
        return out(async () => (await env.SELF.fetch("https://front/loop")).text());
      case "/gone":
        return out(async () => (await env.GONE.fetch("https://gone/")).text());
      case "/admin-fetch":
        return out(async () => (await env.ADMIN.fetch("https://admin/x")).text());
      case "/admin-rpc":
        return out(() => env.ADMIN.ban("mallory"));
      case "/not-entry":
        return out(() => env.NOTENTRY.ban("x"));
      case "/unbound":
        return out(async () => String(env.OTHER));
      default:
        return new Response("front");
    }
  },
};
"#;

#[test]
fn service_bindings_call_other_workers_by_fetch_and_rpc() {
    let node = TestNode::start();
    let (s, b) = node.deploy(
        "auth",
        AUTH,
        json!([{"type": "plain_text", "name": "WHO", "text": "auth-worker"}]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = node.deploy(
        "front",
        FRONT,
        json!([
            {"type": "service", "name": "AUTH", "service": "auth"},
            {"type": "service", "name": "SELF", "service": "front"},
            {"type": "service", "name": "GONE", "service": "not-deployed"},
            {"type": "service", "name": "ADMIN", "service": "auth", "entrypoint": "Admin", "props": {"role": "ops"}},
            {"type": "service", "name": "NOTENTRY", "service": "auth", "entrypoint": "NotAnEntrypoint"},
        ]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    let get = |p: &str| node.get_worker("front", p);

    assert_eq!(
        get("/fetch"),
        (
            200,
            "202 1 auth saw POST /verify token=t1 body=hi".to_owned()
        )
    );
    assert_eq!(
        get("/rpc?t=secret"),
        (200, "true auth-worker true true".to_owned())
    );
    assert_eq!(
        get("/rpc?t=guess"),
        (200, "false auth-worker true true".to_owned())
    );
    // The callee's exception keeps its class.
    assert_eq!(
        get("/rpc-throws"),
        (502, "RangeError: no such user".to_owned())
    );
    let (s, b) = get("/rpc-missing");
    assert_eq!(s, 502, "{b}");
    assert!(
        b.starts_with("TypeError: The RPC receiver does not implement the method \"nope\""),
        "{b}"
    );
    // A worker calling itself is stopped at the depth limit, not by exhaustion:
    // the innermost call fails, every level above passes that answer on.
    let (s, b) = get("/loop");
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("Subrequest depth limit exceeded"), "{b}");
    let (s, b) = get("/gone");
    assert_eq!(s, 502);
    assert!(
        b.contains("not-deployed") && b.contains("not deployed"),
        "{b}"
    );
    // Named entrypoints: fetch and RPC reach the exported class.
    assert_eq!(
        get("/admin-fetch"),
        (200, "admin auth-worker /x {\"role\":\"ops\"}".to_owned())
    );
    assert_eq!(get("/admin-rpc"), (200, "banned mallory by ops".to_owned()));
    let (s, b) = get("/not-entry");
    assert_eq!(s, 502, "{b}");
    assert!(
        b.starts_with("TypeError: The worker has no entrypoint named \"NotAnEntrypoint\""),
        "{b}"
    );
    // Only declared bindings exist.
    assert_eq!(get("/unbound"), (200, "undefined".to_owned()));
    // A bad service name is refused at deploy.
    let (s, b) = node.deploy(
        "bad",
        FRONT,
        json!([{"type": "service", "name": "X", "service": "Not_A_Worker"}]),
        &[],
    );
    assert_eq!(s, 400);
    assert_eq!(b["error"]["code"], "invalid_binding", "{b}");
    let (s, b) = node.deploy(
        "bad",
        FRONT,
        json!([{"type": "service", "name": "X", "service": "auth", "entrypoint": "no-such.class"}]),
        &[],
    );
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "invalid_binding", "{b}");
    let (s, b) = node.deploy(
        "bad",
        FRONT,
        json!([{"type": "service", "name": "X", "service": "auth", "props": [1]}]),
        &[],
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("props must be a JSON object"),
        "{b}"
    );
    assert_eq!(get("/"), (200, "front".to_owned()));
}

const CRON: &str = r#"
export default {
  async scheduled(controller, env, ctx) {
    if (controller.cron === "0 0 1 1 *") throw new Error("cron handler failed");
    const key = controller.cron === "* * * * *" ? "minute" : "demand";
    ctx.waitUntil(env.KV.put(key, JSON.stringify({ cron: controller.cron, time: controller.scheduledTime })));
    const n = Number((await env.KV.get("runs")) ?? "0") + 1;
    await env.KV.put("runs", String(n));
  },
  async fetch() {
    return new Response("cron worker");
  },
};
"#;

fn kv(node: &TestNode, key: &str) -> Option<String> {
    let resp = node
        .http
        .get(format!("{}/v1/kv/cron/values/{key}", node.control))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("kv");
    (resp.status() == 200).then(|| resp.text().unwrap_or_default())
}

fn deploy_cron(node: &TestNode, crons: &[&str]) -> (u16, Value) {
    node.deploy_body(
        "cron",
        &json!({
            "main_module": "worker.js",
            "modules": {"worker.js": CRON},
            "bindings": [{"type": "kv_namespace", "name": "KV", "namespace": "cron"}],
            "crons": crons,
        }),
    )
}

#[test]
fn cron_triggers_run_on_schedule_and_on_demand() {
    let node = TestNode::start();
    // A cron that does not parse: 400 in the error shape, nothing deployed.
    let (s, b) = deploy_cron(&node, &["*/5 * * *"]);
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["code"], "invalid_cron", "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("5 fields"),
        "{b}"
    );
    let (s, b) = deploy_cron(&node, &["61 * * * *"]);
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_cron")),
        "{b}"
    );

    let (s, b) = deploy_cron(&node, &["* * * * *", "0 0 1 1 *"]);
    assert_eq!(s, 200, "{b}");
    let (_, info) = node.control_request(Method::GET, "/v1/workers/cron", None);
    assert_eq!(info["crons"], json!(["* * * * *", "0 0 1 1 *"]));

    // On demand, through the control plane's test hook.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    let (s, out) = node.control_request(
        Method::POST,
        "/v1/workers/cron/scheduled?cron=*/7%20*%20*%20*%20*",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(out["outcome"], "ok", "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        if let Some(v) = kv(&node, "demand") {
            break serde_json::from_str::<Value>(&v).expect("json");
        }
        assert!(Instant::now() < deadline, "scheduled() did not write");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(last["cron"], "*/7 * * * *");
    assert!(last["time"].as_u64().unwrap_or(0) >= before, "{last}");

    // A handler that throws is reported, and counted.
    let (_, out) = node.control_request(
        Method::POST,
        "/v1/workers/cron/scheduled?cron=0%200%201%201%20*",
        None,
    );
    assert_eq!(out["outcome"], "exception", "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or("")
            .contains("cron handler failed"),
        "{out}"
    );
    let (s, _) = node.control_request(Method::POST, "/v1/workers/nope/scheduled", None);
    assert_eq!(s, 404);

    // On schedule: "* * * * *" runs at the next minute boundary.
    let runs_before: u64 = kv(&node, "runs").and_then(|v| v.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let runs: u64 = kv(&node, "runs").and_then(|v| v.parse().ok()).unwrap_or(0);
        if runs > runs_before {
            break;
        }
        assert!(Instant::now() < deadline, "the cron never fired");
        std::thread::sleep(Duration::from_millis(250));
    }
    let last: Value = serde_json::from_str(&kv(&node, "minute").unwrap_or_default()).expect("json");
    assert_eq!(last["cron"], "* * * * *");
    assert_eq!(
        last["time"].as_u64().unwrap_or(1) % 60_000,
        0,
        "minute-aligned: {last}"
    );
    let m = node.metrics();
    assert!(
        m.contains("edged_cron_runs_total{worker=\"cron\",outcome=\"ok\"}"),
        "{m}"
    );
    assert!(
        m.contains("edged_cron_runs_total{worker=\"cron\",outcome=\"exception\"} 1"),
        "{m}"
    );
}
