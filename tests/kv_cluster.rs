//! Workers KV across PoPs: 3 real `nats-server` (R3, fsync before ack) and 3
//! edged PoPs. Writes go to one replicated log, every PoP applies it: a write
//! on one PoP is read on the others, concurrent writers converge, large
//! values travel, a killed PoP loses no acknowledged write and catches up, a
//! PoP away past the log's age reloads from the snapshot, and with the core
//! down reads are served while writes fail clearly.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, status, wait_members, NatsCore};
use common::TestNode;
use serde_json::{json, Value};

const NS: &str = "shared";

/// A key and the value a write of it was acknowledged with.
type Written = (String, Vec<u8>);

/// A PoP whose `[cluster]` table also has `cluster_keys` (TOML lines).
fn pop(core: &NatsCore, id: &str, cluster_keys: &str) -> TestNode {
    let region = match id {
        "pop-a" => "eu",
        "pop-b" => "us",
        _ => "ap",
    };
    TestNode::start_with(&cluster_config(&core.urls, id, region).replacen(
        "[cluster]\n",
        &format!("[cluster]\n{cluster_keys}"),
        1,
    ))
}

fn three_pops(core: &NatsCore, cluster_keys: &str) -> Vec<TestNode> {
    let nodes = vec![
        pop(core, "pop-a", cluster_keys),
        pop(core, "pop-b", cluster_keys),
        pop(core, "pop-c", cluster_keys),
    ];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    nodes
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn put(
    http: &reqwest::blocking::Client,
    node: &TestNode,
    key: &str,
    value: Vec<u8>,
) -> (u16, String) {
    let r = http
        .put(format!("{}/v1/kv/{NS}/values/{key}", node.control))
        .bearer_auth(common::TOKEN)
        .body(value)
        .send()
        .expect("put");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn delete(http: &reqwest::blocking::Client, node: &TestNode, key: &str) -> u16 {
    http.delete(format!("{}/v1/kv/{NS}/values/{key}", node.control))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("delete")
        .status()
        .as_u16()
}

fn get(http: &reqwest::blocking::Client, node: &TestNode, key: &str) -> Option<Vec<u8>> {
    let r = http
        .get(format!("{}/v1/kv/{NS}/values/{key}", node.control))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("get");
    match r.status().as_u16() {
        200 => Some(r.bytes().unwrap().to_vec()),
        404 => None,
        other => panic!("get {key}: {other} {}", r.text().unwrap_or_default()),
    }
}

/// Every key and value of the namespace on `node` (through `list()`).
fn dump(http: &reqwest::blocking::Client, node: &TestNode) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let (code, page) = node.control_request(
            reqwest::Method::GET,
            &format!("/v1/kv/{NS}/keys?cursor={cursor}"),
            None,
        );
        assert_eq!(code, 200, "{page}");
        for k in page["keys"].as_array().unwrap() {
            let name = k["name"].as_str().unwrap().to_owned();
            let value = get(http, node, &name).expect("listed key has a value");
            out.insert(name, value);
        }
        if page["list_complete"] == true {
            return out;
        }
        cursor = page["cursor"].as_str().unwrap().to_owned();
    }
}

fn kv_progress(node: &TestNode) -> Value {
    status(node)["kv"].clone()
}

/// Waits until every node has applied the log up to the same sequence.
fn wait_converged(nodes: &[&TestNode]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied: Vec<u64> = nodes
            .iter()
            .map(|n| kv_progress(n)["applied"].as_u64().unwrap_or(0))
            .collect();
        let behind: Vec<u64> = nodes
            .iter()
            .map(|n| kv_progress(n)["behind"].as_u64().unwrap_or(1))
            .collect();
        if applied.iter().all(|a| *a == applied[0]) && behind.iter().all(|b| *b == 0) {
            return applied[0];
        }
        assert!(
            Instant::now() < deadline,
            "PoPs did not converge: applied {applied:?}, behind {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn writes_propagate_converge_and_carry_large_values() {
    let core = NatsCore::start(3);
    let nodes = three_pops(&core, "");
    let http = client();

    // Read your own write at once, then on the other PoPs: propagation
    // measured from the writer's acknowledgement to the first read that sees
    // the value elsewhere (alternating readers), over 1,000 writes.
    let mut delays = Vec::new();
    for i in 0..1000 {
        let key = format!("p{i}");
        let value = format!("value {i}").into_bytes();
        let (code, body) = put(&http, &nodes[0], &key, value.clone());
        assert_eq!(code, 200, "{body}");
        let acked = Instant::now();
        assert_eq!(
            get(&http, &nodes[0], &key),
            Some(value.clone()),
            "read-your-write"
        );
        let reader = &nodes[1 + i % 2];
        loop {
            if get(&http, reader, &key).as_deref() == Some(&value[..]) {
                delays.push(acked.elapsed());
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(10),
                "{key} never reached the other PoP"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    delays.sort();
    eprintln!(
        "propagation over {} writes: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().unwrap()
    );
    assert!(percentile(&delays, 0.99) < Duration::from_secs(5));

    // Concurrent writers of the same keys on every PoP, deletes included:
    // every PoP ends with the same namespace.
    std::thread::scope(|s| {
        for (w, node) in nodes.iter().enumerate() {
            let http = client();
            s.spawn(move || {
                for i in 0..300 {
                    let key = format!("c{}", i % 40);
                    if i % 7 == w {
                        assert_eq!(delete(&http, node, &key), 200);
                    } else {
                        let (code, body) = put(&http, node, &key, format!("{w}:{i}").into_bytes());
                        assert_eq!(code, 200, "{body}");
                    }
                }
            });
        }
    });
    let seq = wait_converged(&nodes.iter().collect::<Vec<_>>());
    let a = dump(&http, &nodes[0]);
    assert!(a.len() > 1000, "{}", a.len());
    for other in &nodes[1..] {
        assert!(
            dump(&http, other) == a,
            "PoPs differ after concurrent writers"
        );
    }
    eprintln!("converged: {} keys at sequence {seq} on every PoP", a.len());

    // Metadata and expiration travel with the write.
    let r = http
        .put(format!(
            "{}/v1/kv/{NS}/values/meta?expiration_ttl=3600&metadata=%7B%22v%22%3A1%7D",
            nodes[0].control
        ))
        .bearer_auth(common::TOKEN)
        .body("m")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = http
            .get(format!("{}/v1/kv/{NS}/values/meta", nodes[2].control))
            .bearer_auth(common::TOKEN)
            .send()
            .unwrap();
        if r.status().as_u16() == 200 {
            break r;
        }
        assert!(Instant::now() < deadline, "meta never arrived");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(r.headers()["x-kv-metadata"], "{\"v\":1}");
    let exp: u64 = r.headers()["x-kv-expiration"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 3500..=now + 3700).contains(&exp), "{exp}");
    assert_eq!(delete(&http, &nodes[1], "meta"), 200);

    // A 20 MiB value written on A is read on C.
    let big: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (code, body) = put(&http, &nodes[0], "big", big.clone());
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = get(&http, &nodes[2], "big") {
            assert!(v == big, "the 20 MiB value arrived changed");
            break;
        }
        assert!(Instant::now() < deadline, "the 20 MiB value never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = nodes[2].metrics();
    assert!(TestNode::metric_in(&metrics, "edged_kv_applied_sequence").unwrap_or(0.0) > 0.0);
    assert!(metrics.contains("edged_kv_replication_lag_seconds"));
    let cluster = status(&nodes[1]);
    let members = cluster["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .all(|m| m["kv"]["applied"].as_u64().is_some()),
        "every PoP's KV progress in /v1/cluster: {cluster}"
    );
    drop(core);
}

#[test]
fn a_killed_pop_loses_no_acknowledged_write_and_catches_up() {
    let core = NatsCore::start(3);
    let mut nodes = three_pops(&core, "");
    let acked: Arc<Mutex<Vec<Written>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let urls: Vec<(String, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.control.clone(), i))
        .collect();
    let writers: Vec<_> = urls
        .into_iter()
        .map(|(control, w)| {
            let (acked, stop, failed) = (acked.clone(), stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let value = format!("{w}/{i}").into_bytes();
                    let ok = http
                        .put(format!("{control}/v1/kv/{NS}/values/{key}"))
                        .bearer_auth(common::TOKEN)
                        .body(value.clone())
                        .send()
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        acked.lock().unwrap().push((key, value));
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    nodes[0].kill();
    std::thread::sleep(Duration::from_secs(2));
    nodes[0].restart();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    // The restarted PoP reports healthy once it caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, health) = nodes[0].control_request(reqwest::Method::GET, "/healthz", None);
        if health["status"] == "ok" {
            assert_eq!(health["cluster"]["kv"]["caught_up"], true, "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted PoP never caught up: {health}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_converged(&nodes.iter().collect::<Vec<_>>());
    let acked = acked.lock().unwrap().clone();
    let http = client();
    let dumps: Vec<_> = nodes.iter().map(|n| dump(&http, n)).collect();
    for (key, value) in &acked {
        for (i, d) in dumps.iter().enumerate() {
            assert_eq!(
                d.get(key),
                Some(value),
                "acknowledged {key} missing on PoP {i}"
            );
        }
    }
    eprintln!(
        "kill -9 during writes: {} acknowledged writes, all on every PoP; {} failed (the killed PoP's)",
        acked.len(),
        failed.load(Ordering::Relaxed)
    );
    assert!(acked.len() > 100);
    drop(core);
}

#[test]
fn a_pop_away_past_the_logs_age_reloads_from_the_snapshot() {
    let core = NatsCore::start(3);
    let mut nodes = three_pops(&core, "kv_log_max_age_s = 3\nkv_snapshot_interval_s = 1\n");
    let http = client();
    for i in 0..50 {
        assert_eq!(
            put(&http, &nodes[0], &format!("old{i}"), b"x".to_vec()).0,
            200
        );
    }
    wait_converged(&nodes.iter().collect::<Vec<_>>());
    nodes[2].kill();
    for i in 0..50 {
        assert_eq!(delete(&http, &nodes[0], &format!("old{i}")), 200);
        assert_eq!(
            put(
                &http,
                &nodes[1],
                &format!("new{i}"),
                format!("n{i}").into_bytes()
            )
            .0,
            200
        );
    }
    // Past the log's age: the writes C missed are gone from the log.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(put(&http, &nodes[0], "last", b"l".to_vec()).0, 200);
    nodes[2].restart();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    wait_converged(&nodes.iter().collect::<Vec<_>>());
    let a = dump(&http, &nodes[0]);
    assert_eq!(a.len(), 51, "{:?}", a.keys().collect::<Vec<_>>());
    assert!(
        dump(&http, &nodes[2]) == a,
        "the PoP away reloaded a different namespace"
    );
    let loaded = nodes[2].metrics();
    assert!(
        loaded.contains("edged_kv_snapshots_total{op=\"loaded\"} 1"),
        "the snapshot was used: {}",
        loaded
            .lines()
            .filter(|l| l.contains("kv_snap"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(core);
}

#[test]
fn with_the_core_down_reads_are_served_and_writes_fail_clearly() {
    let mut core = NatsCore::start(3);
    let nodes = three_pops(&core, "");
    let http = client();
    assert_eq!(put(&http, &nodes[0], "k", b"before".to_vec()).0, 200);
    wait_converged(&nodes.iter().collect::<Vec<_>>());
    // A worker reads and writes the namespace.
    let worker = r#"
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/put") {
      try { await env.KV.put("k", "from worker"); return new Response("ok"); }
      catch (e) { return new Response(`${e.constructor.name}: ${e.message}`, { status: 503 }); }
    }
    return new Response((await env.KV.get("k")) ?? "none");
  },
};
"#;
    let (code, body) = nodes[0].deploy(
        "kvw",
        worker,
        json!([{"type": "kv_namespace", "name": "KV", "namespace": NS}]),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.get_worker("kvw", "/").0 != 200 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    core.stop();
    for n in &nodes {
        assert_eq!(n.get_worker("kvw", "/"), (200, "before".to_owned()));
    }
    let (code, body) = nodes[1].get_worker("kvw", "/put");
    assert_eq!(code, 503);
    assert!(
        body.starts_with("Error: KV PUT failed: 503 storage unavailable"),
        "{body}"
    );
    let (code, body) = put(&http, &nodes[2], "k", b"during".to_vec());
    assert!(code >= 500, "{code} {body}");
    core.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = nodes[1].get_worker("kvw", "/put");
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not come back: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_converged(&nodes.iter().collect::<Vec<_>>());
    for n in &nodes {
        assert_eq!(n.get_worker("kvw", "/"), (200, "from worker".to_owned()));
    }
    drop(core);
}

/// A control-plane call with `token`.
fn call(
    node: &TestNode,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    node.control_request_as(token, method, path, body)
}

/// KV data is on every PoP, so who owns a namespace (and a route host) must be
/// decided for the whole cluster: another account on another PoP can neither
/// read nor bind a namespace claimed elsewhere, nor claim an overlapping host,
/// even before any deployment carried the claim there.
#[test]
fn accounts_own_namespaces_and_hosts_across_pops() {
    let core = NatsCore::start(3);
    let nodes = three_pops(&core, "");
    let shop = nodes[0].account("shop");
    let mallory = nodes[1].account("mallory");
    let put = reqwest::Method::PUT;
    let (s, b) = call(
        &nodes[0],
        &shop,
        put.clone(),
        "/v1/kv/cart/values/items",
        None,
    );
    assert_eq!(s, 200, "{b}");
    // Replicated to pop-b, but not readable there by another account.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(
        &nodes[1],
        common::TOKEN,
        reqwest::Method::GET,
        "/v1/kv/cart/keys",
        None,
    )
    .1["keys"]
        .as_array()
        .is_none_or(|k| k.is_empty())
    {
        assert!(Instant::now() < deadline, "the write never reached pop-b");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/kv/cart/values/items"),
        (reqwest::Method::GET, "/v1/kv/cart/keys"),
        (put.clone(), "/v1/kv/cart/values/items"),
        (reqwest::Method::DELETE, "/v1/kv/cart/values/items"),
    ] {
        let (s, b) = call(&nodes[1], &mallory, method.clone(), path, None);
        assert_eq!(s, 403, "{method} {path} on pop-b: {b}");
    }
    let worker = |bindings: Value, routes: &[&str]| {
        json!({
            "main_module": "worker.js",
            "modules": { "worker.js": "export default { fetch() { return new Response('x'); } }" },
            "bindings": bindings,
            "routes": routes,
        })
    };
    let (s, b) = call(
        &nodes[1],
        &mallory,
        put.clone(),
        "/v1/workers/loot",
        Some(&worker(
            json!([{"type": "kv_namespace", "name": "C", "namespace": "cart"}]),
            &[],
        )),
    );
    assert_eq!(
        s, 403,
        "binding another account's namespace on another PoP: {b}"
    );
    // Hosts: shop's route on pop-a, then an overlapping one on pop-c at once.
    let (s, b) = call(
        &nodes[0],
        &shop,
        put.clone(),
        "/v1/workers/shop-api",
        Some(&worker(json!([]), &["shop.example/*"])),
    );
    assert_eq!(s, 200, "{b}");
    let thief = nodes[2].account("thief");
    let (s, b) = call(
        &nodes[2],
        &thief,
        put.clone(),
        "/v1/workers/checkout",
        Some(&worker(json!([]), &["shop.example/checkout*"])),
    );
    assert_eq!(s, 403, "an overlapping host on another PoP: {b}");
    // Their own names are theirs.
    let (s, b) = call(
        &nodes[1],
        &mallory,
        put.clone(),
        "/v1/workers/loot",
        Some(&worker(
            json!([{"type": "kv_namespace", "name": "L", "namespace": "loot"}]),
            &["mallory.example/*"],
        )),
    );
    assert_eq!(s, 200, "{b}");
    drop(core);
}

/// Waits up to 15 s for `check` to hold; how long it took.
fn within(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what} within 15 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Accounts and tokens are the cluster's, not a PoP's: a token made on one
/// PoP works on the others, a revoked one stops everywhere, a removed
/// account's workers, data, tokens and names go from every PoP (and its
/// names can be taken again, empty), and with the core down these changes
/// answer 503 while existing tokens keep working.
#[test]
fn accounts_and_tokens_work_on_every_pop() {
    let mut core = NatsCore::start(3);
    let nodes = three_pops(&core, "");
    let (get, put, post, delete) = (
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    );
    let acme = nodes[0].account("acme");
    let took = within("acme's token works on pop-b", || {
        call(&nodes[1], &acme, get.clone(), "/v1/workers", None).0 == 200
    });
    eprintln!("token from pop-a usable on pop-b after {took:?}");
    let (s, b) = call(
        &nodes[2],
        common::TOKEN,
        post.clone(),
        "/v1/accounts",
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(s, 409, "the same account made on another PoP: {b}");
    let source = "export default { async fetch(req, env) { \
        return new Response(String(await env.D.get('k'))); } }";
    let (s, b) = call(
        &nodes[1],
        &acme,
        put.clone(),
        "/v1/workers/acme-app",
        Some(&json!({
            "main_module": "worker.js",
            "modules": { "worker.js": source },
            "bindings": [{"type": "kv_namespace", "name": "D", "namespace": "acme-data"}],
            "routes": ["acme.example/*"],
        })),
    );
    assert_eq!(s, 200, "acme deploys on pop-b: {b}");
    let (s, b) = call(
        &nodes[2],
        &acme,
        put.clone(),
        "/v1/kv/acme-data/values/k",
        None,
    );
    assert_eq!(s, 200, "acme writes on pop-c: {b}");
    for n in &nodes {
        within("acme's worker reads its data everywhere", || {
            n.get("acme.example", "/") == (200, String::new())
        });
    }

    // A second token, revoked on another PoP: refused everywhere.
    let (s, b) = call(
        &nodes[0],
        common::TOKEN,
        post.clone(),
        "/v1/tokens",
        Some(&json!({"account": "acme"})),
    );
    assert_eq!(s, 201, "{b}");
    let (second, second_id) = (
        b["token"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    for n in &nodes {
        within("the second token works", || {
            call(n, &second, get.clone(), "/v1/workers", None).0 == 200
        });
    }
    let (s, b) = call(
        &nodes[2],
        common::TOKEN,
        delete.clone(),
        &format!("/v1/tokens/{second_id}"),
        None,
    );
    assert_eq!(s, 200, "{b}");
    for n in &nodes {
        let took = within("the revoked token is refused", || {
            call(n, &second, get.clone(), "/v1/workers", None).0 == 401
        });
        eprintln!("revocation on pop-c seen on {} after {took:?}", n.control);
    }
    assert_eq!(
        call(&nodes[0], &acme, get.clone(), "/v1/workers", None).0,
        200
    );

    // The account removed on pop-b: gone from every PoP, its names free.
    let (s, b) = call(
        &nodes[1],
        common::TOKEN,
        delete.clone(),
        "/v1/accounts/acme",
        None,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["workers"], json!(["acme-app"]), "{b}");
    assert_eq!(b["namespaces"], json!(["acme-data"]), "{b}");
    for n in &nodes {
        within("the account is gone", || {
            let (_, list) = call(n, common::TOKEN, get.clone(), "/v1/accounts", None);
            !list["accounts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["id"] == "acme"))
        });
        within("its token is refused", || {
            call(n, &acme, get.clone(), "/v1/workers", None).0 == 401
        });
        within("its worker is gone", || n.get("acme.example", "/").0 == 404);
    }
    // The name made again is a new account: the old tokens stay refused.
    let (s, b) = call(
        &nodes[0],
        common::TOKEN,
        post.clone(),
        "/v1/accounts",
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(s, 201, "{b}");
    std::thread::sleep(Duration::from_millis(300));
    for n in &nodes {
        assert_eq!(
            call(n, &acme, get.clone(), "/v1/workers", None).0,
            401,
            "an old token of a re-made name"
        );
    }
    let other = nodes[2].account("other");
    within("other's token works on pop-a", || {
        call(&nodes[0], &other, get.clone(), "/v1/workers", None).0 == 200
    });
    let (s, b) = call(
        &nodes[0],
        &other,
        put.clone(),
        "/v1/kv/acme-data/values/x",
        None,
    );
    assert_eq!(s, 200, "the released namespace can be taken: {b}");
    for n in &nodes {
        within("the taken namespace holds only the new owner's key", || {
            let (s, b) = call(n, &other, get.clone(), "/v1/kv/acme-data/keys", None);
            s == 200 && b["keys"].as_array().map(|k| k.len()) == Some(1)
        });
        let (_, b) = call(n, &other, get.clone(), "/v1/kv/acme-data/keys", None);
        assert_eq!(b["keys"][0]["name"], "x", "{b}");
    }
    let (s, b) = call(
        &nodes[2],
        &other,
        put.clone(),
        "/v1/workers/other-app",
        Some(&json!({
            "main_module": "worker.js",
            "modules": { "worker.js": "export default { fetch() { return new Response('o'); } }" },
            "routes": ["acme.example/*"],
        })),
    );
    assert_eq!(s, 200, "the released host can be routed: {b}");

    // The core down: account changes refused, tokens still work.
    core.stop();
    let (s, b) = call(
        &nodes[0],
        common::TOKEN,
        post.clone(),
        "/v1/accounts",
        Some(&json!({"id": "late"})),
    );
    assert_eq!(s, 503, "{b}");
    assert_eq!(b["error"]["code"], "cluster_unavailable", "{b}");
    let (s, b) = call(
        &nodes[1],
        common::TOKEN,
        post,
        "/v1/tokens",
        Some(&json!({"account": "other"})),
    );
    assert_eq!(s, 503, "{b}");
    assert_eq!(call(&nodes[1], &other, get, "/v1/workers", None).0, 200);
    drop(nodes);
}
