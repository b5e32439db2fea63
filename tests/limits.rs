//! End-to-end: per-isolate CPU and memory limits stop the offender, not the node or
//! other workers.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::Value;

const STEADY: &str = "export default { fetch() { return new Response('steady'); } }";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn infinite_loop_is_stopped_by_the_cpu_limit() {
    let node = TestNode::start();
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "spin",
        "export default { async fetch(req) {
            if (new URL(req.url).pathname === '/ok') return new Response('ok');
            while (true) {}
        } }",
    );

    // The other worker keeps answering while the loop runs.
    let spinner = {
        let http = node.http.clone();
        let url = format!("{}/loop", node.data);
        std::thread::spawn(move || {
            let started = Instant::now();
            let resp = http
                .get(url)
                .header("host", "spin.workers.localhost")
                .send()
                .unwrap();
            (
                resp.status().as_u16(),
                resp.text().unwrap(),
                started.elapsed(),
            )
        })
    };
    for _ in 0..20 {
        assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
    }
    let (status, body, took) = spinner.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["code"], "cpu_limit_exceeded");
    assert!(took < Duration::from_secs(10), "loop ran for {took:?}");

    // The isolate was replaced: the same worker serves again.
    assert_eq!(node.get_worker("spin", "/ok"), (200, "ok".to_owned()));

    // An await-heavy request that uses little CPU is not penalised for wall time.
    node.deploy_ok(
        "sleepy",
        "export default { async fetch() { await new Promise(r => setTimeout(r, 300)); return new Response('rested'); } }",
    );
    assert_eq!(node.get_worker("sleepy", "/"), (200, "rested".to_owned()));

    let metrics = node.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edged_limit_kills_total")
                && l.contains("limit=\"cpu\"")
                && l.contains("worker=\"spin\"")),
        "{metrics}"
    );
}

#[test]
fn memory_bomb_is_stopped_by_the_heap_limit() {
    let mut node = TestNode::start_with("[limits]\nmemory_mb = 64\ncpu_ms = 10000\n");
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "bomb",
        "export default { fetch(req) {
            if (new URL(req.url).pathname === '/ok') return new Response('ok');
            const hoard = [];
            while (true) hoard.push(new Array(100000).fill({ x: Math.random() }));
        } }",
    );
    let (status, body) = node.get_worker("bomb", "/");
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["code"], "memory_limit_exceeded");
    assert!(node.alive(), "the node process died");
    assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
    assert_eq!(node.get_worker("bomb", "/ok"), (200, "ok".to_owned()));

    let metrics = node.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edged_limit_kills_total") && l.contains("limit=\"memory\"")),
        "{metrics}"
    );
}
