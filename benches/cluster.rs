//! Criterion bench of a remote actor message: one Durable Object call sent
//! to the object's owner PoP (a local call) and to another PoP (the call
//! crosses the peer transport), in a real cluster — 3 `nats-server` (R3,
//! fsync) and 2 edged processes on loopback, started here (needs
//! `scripts/setup-nats.sh` or `EDGED_NATS_SERVER`).
//! - `remote_do/{local,remote}_read`: an RPC call that touches no storage —
//!   the difference is what the hop adds;
//! - `remote_do/{local,remote}_increment`: a durable increment (its commit
//!   replicated to the core before the answer), the same call from both sides.
//!
//! Each iteration is one HTTP request on a kept-alive connection to the
//! PoP's data plane. Run: `cargo bench --bench cluster`
//! (`EDGED_BENCH_PEER_TLS=1`: the peer transport over TLS).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::cluster::{start_node, wait_members, NatsCore};
use common::TestNode;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const WORKER: &str = r#"
import { DurableObject } from "cloudflare:workers";
export class Counter extends DurableObject {
  read() { return 1; }
  async increment() {
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    this.ctx.storage.put("v", v);
    return v;
  }
}
export default {
  async fetch(request, env) {
    const stub = env.COUNTER.get(env.COUNTER.idFromName("bench"));
    const path = new URL(request.url).pathname;
    const v = path === "/read" ? await stub.read() : await stub.increment();
    return new Response(String(v));
  },
};
"#;

const HOST: &str = "bench.workers.localhost";

fn events(node: &TestNode) -> f64 {
    TestNode::metric_in(&node.metrics(), "edged_do_events_total").unwrap_or(0.0)
}

fn bench(c: &mut Criterion) {
    let core = NatsCore::start(3);
    // `EDGED_BENCH_PEER_TLS=1`: the peer transport over TLS (a CA made here).
    let certs = tempfile::tempdir().expect("tempdir");
    let tls = std::env::var("EDGED_BENCH_PEER_TLS").is_ok_and(|v| v == "1");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("ca");
    std::fs::write(certs.path().join("ca.pem"), ca.pem()).expect("write");
    let node = |id: &str, region: &str| {
        if !tls {
            return start_node(&core, id, region);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("cert");
        let d = certs.path().display();
        std::fs::write(certs.path().join(format!("{id}.pem")), cert.pem()).expect("write");
        std::fs::write(certs.path().join(format!("{id}.key")), key.serialize_pem()).expect("write");
        let keys = format!(
            "[cluster]\npeer_cert = \"{d}/{id}.pem\"\npeer_key = \"{d}/{id}.key\"\npeer_ca = \"{d}/ca.pem\"\n"
        );
        TestNode::start_with(
            &common::cluster::cluster_config(&core.urls, id, region).replacen(
                "[cluster]\n",
                &keys,
                1,
            ),
        )
    };
    let nodes = [node("pop-a", "eu"), node("pop-b", "us")];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 2);
    let (s, b) = nodes[0].deploy(
        "bench",
        WORKER,
        json!([{"type": "durable_object_namespace", "name": "COUNTER", "class_name": "Counter"}]),
        &[],
    );
    assert_eq!(s, 200, "deploy: {b}");
    for n in &nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while n.get(HOST, "/read").0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let before: Vec<f64> = nodes.iter().map(events).collect();
    nodes[1].get(HOST, "/read");
    let after: Vec<f64> = nodes.iter().map(events).collect();
    let owner = (0..2)
        .find(|&i| after[i] > before[i])
        .expect("the owner counts the event in edged_do_events_total");
    let (local, remote) = (&nodes[owner], &nodes[1 - owner]);

    let mut group = c.benchmark_group("remote_do");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for (name, node, path) in [
        ("local_read", local, "/read"),
        ("remote_read", remote, "/read"),
        ("local_increment", local, "/increment"),
        ("remote_increment", remote, "/increment"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let (s, _) = node.get(HOST, path);
                assert_eq!(s, 200);
            })
        });
    }
    group.finish();
    drop(nodes);
    drop(core);
}

criterion_group!(benches, bench);
criterion_main!(benches);
