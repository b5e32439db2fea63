//! End-to-end: accounts. An account's token sees and changes only what its
//! account owns; across accounts, names, namespaces, services and hosts are
//! refused; within an account, workers share them. The operator's token
//! manages accounts and tokens, from the API and the CLI.

mod common;

use common::{TestNode, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

fn call(
    node: &TestNode,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    node.control_request_as(token, method, path, body)
}

fn worker(source: &str, bindings: Value, routes: &[&str]) -> Value {
    json!({
        "main_module": "worker.js",
        "modules": { "worker.js": source },
        "bindings": bindings,
        "routes": routes,
    })
}

const SHOP: &str = r#"export default { async fetch(req, env) {
  const u = new URL(req.url);
  if (u.pathname === "/cart") return new Response((await env.CART.get("items")) ?? "empty");
  return new Response("shop " + u.pathname);
} }"#;

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn account_tokens_see_only_their_own_and_cannot_claim_another_accounts_names() {
    let node = TestNode::start();
    let shop = node.account("shop");
    let mallory = node.account("mallory");
    let (s, b) = call(
        &node,
        &shop,
        Method::PUT,
        "/v1/workers/shop-api",
        Some(&worker(
            SHOP,
            json!([{"type": "kv_namespace", "name": "CART", "namespace": "cart"}]),
            &["shop.example/*"],
        )),
    );
    assert_eq!(s, 200, "{b}");
    let (s, _) = call(&node, &shop, Method::PUT, "/v1/kv/cart/values/items", None);
    assert_eq!(s, 200);

    // Invisible to the other account, on every route that names a worker.
    let (_, list) = call(&node, &mallory, Method::GET, "/v1/workers", None);
    assert_eq!(list["workers"], json!([]), "{list}");
    for (method, path) in [
        (Method::GET, "/v1/workers/shop-api"),
        (Method::DELETE, "/v1/workers/shop-api"),
        (Method::POST, "/v1/workers/shop-api/rollback"),
        (Method::POST, "/v1/workers/shop-api/scheduled"),
    ] {
        let (s, b) = call(&node, &mallory, method.clone(), path, None);
        assert_eq!(s, 404, "{method} {path}: {b}");
        assert_eq!(error_code(&b), "not_found");
    }
    // Nothing of the shop's can be claimed or reached.
    let attacks = [
        ("shop-api", worker(SHOP, json!([]), &[])),
        (
            "m1",
            worker(
                SHOP,
                json!([{"type": "kv_namespace", "name": "CART", "namespace": "cart"}]),
                &[],
            ),
        ),
        (
            "m2",
            worker(
                SHOP,
                json!([{"type": "service", "name": "S", "service": "shop-api"}]),
                &[],
            ),
        ),
        ("m3", worker(SHOP, json!([]), &["shop.example/checkout*"])),
        ("m4", worker(SHOP, json!([]), &["*.example/*"])),
        ("m5", worker(SHOP, json!([]), &["*shop.example/*"])),
        ("m6", worker(SHOP, json!([]), &["*/*"])),
    ];
    for (name, body) in &attacks {
        let (s, b) = call(
            &node,
            &mallory,
            Method::PUT,
            &format!("/v1/workers/{name}"),
            Some(body),
        );
        assert_eq!(s, 403, "{name}: {b}");
        assert_eq!(error_code(&b), "forbidden", "{name}: {b}");
    }
    for (method, path) in [
        (Method::GET, "/v1/kv/cart/values/items"),
        (Method::PUT, "/v1/kv/cart/values/items"),
        (Method::DELETE, "/v1/kv/cart/values/items"),
        (Method::GET, "/v1/kv/cart/keys"),
        (Method::POST, "/v1/kv/cart/bulk"),
    ] {
        let (s, b) = call(&node, &mallory, method.clone(), path, Some(&json!([])));
        assert_eq!(s, 403, "{method} {path}: {b}");
    }
    // Operator-only routes and acting for another account.
    for (method, path) in [
        (Method::GET, "/v1/accounts"),
        (Method::POST, "/v1/accounts"),
        (Method::DELETE, "/v1/accounts/shop"),
        (Method::GET, "/v1/tokens"),
        (Method::POST, "/v1/tokens"),
        (Method::DELETE, "/v1/tokens/tok_x"),
        (Method::POST, "/v1/accounts/mallory/hosts"),
    ] {
        let (s, b) = call(
            &node,
            &mallory,
            method.clone(),
            path,
            Some(&json!({"id": "x", "account": "mallory", "pattern": "shop.example"})),
        );
        assert_eq!(s, 403, "{method} {path}: {b}");
    }
    let (s, _) = call(
        &node,
        &mallory,
        Method::PUT,
        "/v1/workers/m7?account=shop",
        Some(&worker(SHOP, json!([]), &[])),
    );
    assert_eq!(s, 403);
    let (s, _) = call(&node, "edg_not_a_token", Method::GET, "/v1/workers", None);
    assert_eq!(s, 401);

    // The shop is untouched: its route, its name, its data.
    let (s, b) = node.get("shop.example", "/checkout");
    assert_eq!((s, b.as_str()), (200, "shop /checkout"));
    let (s, b) = node.get("shop.example", "/cart");
    assert_eq!((s, b.as_str()), (200, ""));
    // An account may add routes under its own hosts; the operator sees all.
    let (s, b) = call(
        &node,
        &mallory,
        Method::PUT,
        "/v1/workers/m8",
        Some(&worker(SHOP, json!([]), &["mallory.example/*"])),
    );
    assert_eq!(s, 200, "{b}");
    let (_, all) = call(&node, TOKEN, Method::GET, "/v1/workers", None);
    let names: Vec<&str> = all["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, vec!["m8", "shop-api"]);
    // A revoked token is refused from then on.
    let (_, tokens) = call(
        &node,
        TOKEN,
        Method::GET,
        "/v1/tokens?account=mallory",
        None,
    );
    let id = tokens["tokens"][0]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let (s, _) = call(
        &node,
        TOKEN,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        None,
    );
    assert_eq!(s, 200);
    let (s, _) = call(&node, &mallory, Method::GET, "/v1/workers", None);
    assert_eq!(s, 401);
}

#[test]
fn workers_of_one_account_share_namespaces_and_services() {
    let node = TestNode::start();
    let shop = node.account("shop");
    let other = node.account("other");
    let back = r#"import { WorkerEntrypoint } from "cloudflare:workers";
export default class extends WorkerEntrypoint {
  async fetch() { return new Response("back " + ((await this.env.CART.get("k")) ?? "none")); }
  async total() { return Number((await this.env.CART.get("k")) ?? 0) * 2; }
}"#;
    let front = r#"export default { async fetch(req, env) {
  await env.CART.put("k", "21");
  const r = await env.BACK.fetch("https://back/");
  return new Response(`${await r.text()} ${await env.BACK.total()}`);
} }"#;
    let kv = json!({"type": "kv_namespace", "name": "CART", "namespace": "shared-cart"});
    let (s, b) = call(
        &node,
        &shop,
        Method::PUT,
        "/v1/workers/back",
        Some(&worker(back, json!([kv]), &[])),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &node,
        &shop,
        Method::PUT,
        "/v1/workers/front",
        Some(&worker(
            front,
            json!([kv, {"type": "service", "name": "BACK", "service": "back"}]),
            &[],
        )),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        node.get_worker("front", "/"),
        (200, "back 21 42".to_owned())
    );

    // A service binding to a name that does not exist yet is allowed, but if
    // another account takes the name, the binding does not reach it.
    let caller = r#"export default { async fetch(req, env) {
  try { return new Response(await (await env.LATER.fetch("https://later/")).text()); }
  catch (e) { return new Response(`${e.name}: ${e.message}`, { status: 502 }); }
} }"#;
    let (s, b) = call(
        &node,
        &other,
        Method::PUT,
        "/v1/workers/caller",
        Some(&worker(
            caller,
            json!([{"type": "service", "name": "LATER", "service": "later"}]),
            &[],
        )),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &node,
        &shop,
        Method::PUT,
        "/v1/workers/later",
        Some(&worker(SHOP, json!([]), &[])),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = node.get_worker("caller", "/");
    assert_eq!(s, 502, "{b}");
    assert!(b.contains("not deployed"), "{b}");
}

#[test]
fn the_cli_manages_accounts_and_tokens() {
    let node = TestNode::start();
    let edged = |args: &[&str], token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
            .args(args)
            .env("EDGED_CONTROL", &node.control)
            .env("EDGED_TOKEN", token)
            .env("EDGED_LOG", "error")
            .output()
            .expect("run edged");
        assert!(
            out.status.success(),
            "edged {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    edged(&["accounts", "create", "team"], TOKEN);
    let listed: Value = serde_json::from_str(&edged(&["accounts", "ls"], TOKEN)).unwrap();
    assert!(listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == "team"));
    let made: Value =
        serde_json::from_str(&edged(&["tokens", "create", "--account", "team"], TOKEN)).unwrap();
    let token = made["token"].as_str().expect("token").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("w.js");
    std::fs::write(
        &script,
        "export default { fetch() { return new Response('team'); } }",
    )
    .unwrap();
    edged(
        &["deploy", script.to_str().unwrap(), "--name", "team-w"],
        &token,
    );
    assert_eq!(node.get_worker("team-w", "/"), (200, "team".to_owned()));
    let (_, w) = node.control_request(Method::GET, "/v1/workers/team-w", None);
    assert_eq!(w["account"], "team");
    let removed: Value = serde_json::from_str(&edged(&["accounts", "rm", "team"], TOKEN)).unwrap();
    assert_eq!(removed["workers"], json!(["team-w"]));
    assert_eq!(node.get_worker("team-w", "/").0, 404);
}
