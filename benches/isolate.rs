//! Criterion benches of the isolate hot paths:
//! - `cold_start/pool_hit`: a pre-created blank isolate → tenant module evaluated
//!   → first response (what a cold start costs when the pool has an isolate);
//! - `cold_start/blank_isolate`: making a blank isolate from the snapshot (the
//!   work the pool does off the request path);
//! - `warm/engine_direct`: one request straight into a bound isolate (the handler
//!   plus the engine's dispatch, no actors);
//! - `warm/deployment`: one request the way the data plane sends it: dispatch
//!   table → IsolateActor on an isolate thread → response.
//!   `warm/deployment` minus `warm/engine_direct` is the actor path's overhead.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::Poll;

use actix::Actor;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use edged::actors::{Deploy, IsolateThreads, WorkerRegistry};
use edged::config::IsolateConfig;
use edged::js::{BlankIsolate, InvokeRequest, IsolateLimits, Worker, WorkerScript};
use futures::channel::oneshot;

const HELLO: &str = "export default { fetch(req) { return new Response('hello'); } }";

fn script(name: &str) -> WorkerScript {
    WorkerScript {
        crons: Vec::new(),
        name: name.into(),
        version: 1,
        main_module: "worker.js".into(),
        modules: BTreeMap::from([("worker.js".to_owned(), HELLO.into())]),
        bindings: vec![],
        compatibility_date: None,
        compatibility_flags: Vec::new(),
        deployed_at_ms: 0,
        assets: None,
        account: "default".into(),
        storage: "0".repeat(32),
    }
}

fn request() -> InvokeRequest {
    InvokeRequest {
        cf: None,
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
        method: "GET".into(),
        url: "http://bench.workers.localhost/".into(),
        headers: vec![("accept".into(), b"*/*".to_vec())],
        body: None,
    }
}

async fn invoke(worker: &mut Worker) -> usize {
    let (tx, mut rx) = oneshot::channel();
    worker.start(1, request(), tx).expect("alive");
    let resp = poll_fn(|cx| {
        if let Poll::Ready(e) = worker.poll(cx) {
            panic!("isolate died: {e}");
        }
        match rx.try_recv() {
            Ok(Some(r)) => Poll::Ready(r),
            _ => Poll::Pending,
        }
    })
    .await
    .expect("response");
    resp.body
        .and_then(|b| b.as_bytes().map(|b| b.len()))
        .unwrap_or(0)
}

fn engine(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let s = script("bench");
    let mut group = c.benchmark_group("cold_start");
    group.bench_function("pool_hit", |b| {
        b.iter_batched(
            || BlankIsolate::new(IsolateLimits::default()).unwrap(),
            |blank| {
                local.block_on(&rt, async {
                    let mut w = blank.bind(&s, &Default::default()).await.unwrap();
                    invoke(&mut w).await
                })
            },
            BatchSize::SmallInput,
        )
    });
    // nodejs_compat from a 2024-09-23+ date: the Buffer/process globals (and
    // the node modules they need) load at every bind; then a worker that
    // also imports node:stream and node:crypto.
    let mut node = script("bench");
    node.compatibility_date = Some("2025-05-01".into());
    node.compatibility_flags = vec!["nodejs_compat".into()];
    let mut node_heavy = node.clone();
    node_heavy.modules = BTreeMap::from([(
        "worker.js".to_owned(),
        format!("import {{ Readable }} from 'node:stream'; import {{ createHash }} from 'node:crypto'; globalThis.keep = [Readable, createHash]; {HELLO}").into(),
    )]);
    for (label, s) in [
        ("pool_hit_nodejs_compat", &node),
        ("pool_hit_node_stream_crypto", &node_heavy),
    ] {
        group.bench_function(label, |b| {
            b.iter_batched(
                || BlankIsolate::new(IsolateLimits::default()).unwrap(),
                |blank| {
                    local.block_on(&rt, async {
                        let mut w = blank.bind(s, &Default::default()).await.unwrap();
                        invoke(&mut w).await
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("blank_isolate", |b| {
        b.iter(|| BlankIsolate::new(IsolateLimits::default()).unwrap())
    });
    group.finish();

    let mut worker = local.block_on(&rt, async {
        BlankIsolate::new(IsolateLimits::default())
            .unwrap()
            .bind(&s, &Default::default())
            .await
            .unwrap()
    });
    c.bench_function("warm/engine_direct", |b| {
        b.iter(|| local.block_on(&rt, invoke(&mut worker)))
    });
}

/// A cached KV read from JS: a handler doing 100 `get`s of a hot key, against the
/// same handler doing none; the difference / 100 is one cached read in the isolate.
fn kv(c: &mut Criterion) {
    use edged::js::{Binding, HostServices, KvBackend};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let dir = tempfile::tempdir().unwrap();
    let service =
        edged::state::KvService::new(dir.path(), 64 << 20, std::time::Duration::from_secs(60));
    let host = HostServices {
        kv: Some(service.clone()),
        ..Default::default()
    };
    let make = |source: &str| {
        let mut s = script("kvbench");
        s.modules.insert("worker.js".into(), source.into());
        s.bindings = vec![Binding::KvNamespace {
            name: "KV".into(),
            namespace: "bench".into(),
        }];
        s
    };
    let reads = make(
        "export default { async fetch() { let n = 0; for (let i = 0; i < 100; i++) { n += (await env_.KV.get('hot')).length; } return new Response(String(n)); } };"
            .replace("export default", "import { env as env_ } from 'cloudflare:workers'; export default")
            .as_str(),
    );
    let none = make(
        "import { env as env_ } from 'cloudflare:workers'; export default { async fetch() { let n = 0; for (let i = 0; i < 100; i++) { n += 5; } return new Response(String(n)); } };",
    );
    let (mut w_reads, mut w_none) = local.block_on(&rt, async {
        service
            .put(
                "bench",
                "hot",
                bytes::Bytes::from_static(b"value"),
                Default::default(),
            )
            .await
            .unwrap();
        let a = BlankIsolate::new(IsolateLimits::default())
            .unwrap()
            .bind(&reads, &host)
            .await
            .unwrap();
        let b = BlankIsolate::new(IsolateLimits::default())
            .unwrap()
            .bind(&none, &host)
            .await
            .unwrap();
        (a, b)
    });
    let mut group = c.benchmark_group("kv");
    group.bench_function("100_cached_gets", |b| {
        b.iter(|| local.block_on(&rt, invoke(&mut w_reads)))
    });
    group.bench_function("100_no_gets", |b| {
        b.iter(|| local.block_on(&rt, invoke(&mut w_none)))
    });
    group.finish();
}

fn actors(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let deployment = system.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(edged::state::DeploymentStore::open(dir.path()).unwrap());
        std::mem::forget(dir);
        let threads = IsolateThreads::start(1, 2, IsolateLimits::default(), Default::default());
        let registry = WorkerRegistry::new(store, threads, IsolateConfig::default());
        let view = registry.view();
        let addr = registry.start();
        addr.send(Deploy {
            script: script("bench"),
            routes: vec![],
            hosts: vec![],
        })
        .await
        .unwrap()
        .unwrap();
        view.get("bench").unwrap()
    });
    // The floor under any cross-thread actor call: a no-op message to an actor on
    // another arbiter and back, as the data plane does for every request.
    let pinger = system.block_on(async {
        let arbiter = actix::Arbiter::new();
        let addr = Ping::start_in_arbiter(&arbiter.handle(), |_| Ping);
        std::mem::forget(arbiter);
        addr
    });
    c.bench_function("baseline/actor_round_trip", |b| {
        b.iter(|| system.block_on(async { pinger.send(PingMsg).await.unwrap() }))
    });
    c.bench_function("warm/deployment", |b| {
        b.iter(|| {
            system.block_on(async {
                let r = deployment.invoke(1, request()).await.unwrap();
                r.body
                    .and_then(|b| b.as_bytes().map(|b| b.len()))
                    .unwrap_or(0)
            })
        })
    });
}

struct Ping;
impl actix::Actor for Ping {
    type Context = actix::Context<Self>;
}
#[derive(actix::Message)]
#[rtype(result = "u8")]
struct PingMsg;
impl actix::Handler<PingMsg> for Ping {
    type Result = u8;
    fn handle(&mut self, _: PingMsg, _: &mut actix::Context<Self>) -> u8 {
        1
    }
}

/// Activation of a hibernated Durable Object: directory → pool → its existing
/// storage opened → instance constructed → first event answered. No other object
/// of the worker is live, so each activation also binds a fresh object host from
/// a pool isolate (the slow case; with a live host only the constructor runs).
/// 200 objects
/// are created first and left to hibernate (after 50 ms idle); each iteration
/// wakes the next one. Between iterations (untimed) the pool gets 30 ms to
/// refill, as it would between activations that are not back to back.
fn durable_activation(c: &mut Criterion) {
    use edged::js::durable::{DurableObjectSlot, ObjectAddress};
    use edged::js::{Binding, HostServices};
    let system = actix_rt::System::new();
    let dir = tempfile::tempdir().unwrap();
    let (backend, view) = system.block_on(async {
        let store = std::sync::Arc::new(edged::state::DeploymentStore::open(dir.path()).unwrap());
        let slot = DurableObjectSlot::default();
        let host = HostServices {
            durable_objects: slot.clone(),
            ..Default::default()
        };
        let threads = IsolateThreads::start(1, 4, IsolateLimits::default(), host);
        let registry = WorkerRegistry::new(store, threads.clone(), IsolateConfig::default());
        let view = registry.view();
        let addr = registry.start();
        let directory = edged::actors::DurableObjectDirectory::new(
            view.clone(),
            threads,
            dir.path().to_owned(),
            std::time::Duration::from_millis(50),
            1000,
        )
        .start();
        let backend = edged::actors::directory::backend(directory);
        slot.set(backend.clone());
        let mut s = script("objects");
        s.modules.insert(
            "worker.js".into(),
            "export class C { constructor(ctx) { this.ctx = ctx; } async fetch() { return new Response(String((await this.ctx.storage.get('v')) ?? 0)); } } export default { fetch() { return new Response('x'); } };".into(),
        );
        s.bindings = vec![Binding::DurableObjectNamespace { name: "C".into(), class_name: "C".into() }];
        addr.send(Deploy { script: s, routes: vec![], hosts: vec![] }).await.unwrap().unwrap();
        (backend, view)
    });
    let storage = view.get("objects").unwrap().script.storage.clone();
    const OBJECTS: u64 = 200;
    let target = |n: u64| ObjectAddress {
        worker: "objects".into(),
        storage: storage.clone(),
        class_name: "C".into(),
        id: format!("{:064x}", n % OBJECTS),
        name: None,
    };
    for n in 0..OBJECTS {
        system
            .block_on(backend.invoke(target(n), 1, request()))
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut n = 0u64;
    c.bench_function("do/activation_hibernated", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(std::time::Duration::from_millis(30));
                n += 1;
                let t = target(n);
                let started = std::time::Instant::now();
                system.block_on(backend.invoke(t, 1, request())).unwrap();
                total += started.elapsed();
            }
            total
        })
    });
}

criterion_group!(benches, engine, kv, actors, durable_activation);
criterion_main!(benches);
