//! Actor-level tests: the isolate pool, isolate actors and worker supervisors
//! driven by their messages, without HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use edged::actors::{
    Acquire, Drain, Grow, Invoke, IsolateControl, IsolateExited, IsolateThreads, PoolLevel, Spawn,
    WorkerSupervisor,
};
use edged::config::IsolateConfig;
use edged::js::{EngineError, InvokeError, InvokeRequest, IsolateLimits, WorkerScript};

fn script(name: &str, source: &str) -> Arc<WorkerScript> {
    Arc::new(WorkerScript {
        crons: Vec::new(),
        name: name.into(),
        version: 1,
        main_module: "worker.js".into(),
        modules: BTreeMap::from([("worker.js".to_owned(), source.into())]),
        bindings: vec![],
        compatibility_date: None,
        compatibility_flags: Vec::new(),
        deployed_at_ms: 0,
        assets: None,
        account: "default".into(),
        storage: "0".repeat(32),
    })
}

fn get(path: &str) -> InvokeRequest {
    InvokeRequest {
        cf: None,
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
        method: "GET".into(),
        url: format!("http://test{path}"),
        headers: vec![],
        body: None,
    }
}

async fn text(addr: &Addr<edged::actors::IsolateActor>, path: &str) -> Result<String, InvokeError> {
    let r = addr
        .send(Invoke {
            request_id: 1,
            request: get(path),
        })
        .await
        .expect("mailbox")?;
    Ok(String::from_utf8(
        r.body
            .and_then(|b| b.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default(),
    )
    .unwrap())
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

/// Collects `IsolateExited` notices, standing in for a supervisor.
#[derive(Default)]
struct ExitLog(Arc<parking_lot::Mutex<Vec<Option<EngineError>>>>);
impl Actor for ExitLog {
    type Context = Context<Self>;
}
impl Handler<IsolateExited> for ExitLog {
    type Result = ();
    fn handle(&mut self, msg: IsolateExited, _: &mut Context<Self>) {
        self.0.lock().push(msg.cause);
    }
}

const INTERLEAVE: &str = r#"
let waiters = [];
globalThis.tenantMark ??= Math.random();
export default {
  async fetch(req) {
    const path = new URL(req.url).pathname;
    if (path === "/wait") { await new Promise((r) => waiters.push(r)); return new Response("released"); }
    if (path === "/release") { const n = waiters.length; waiters.forEach((r) => r()); waiters = []; return new Response(String(n)); }
    if (path === "/mark") return new Response(String(globalThis.tenantMark));
    if (path === "/spin") { while (true) {} }
    if (path === "/sleep") { await scheduler.wait(700); return new Response("slept"); }
    return new Response("hi");
  },
};
"#;

#[test]
fn pool_hands_out_blank_isolates_and_refills() {
    actix_rt::System::new().block_on(async {
        let threads = IsolateThreads::start(1, 2, IsolateLimits::default(), Default::default());
        let pool = threads.pool(0).clone();
        wait_for_pool(&pool, 2).await;

        let control = Arc::new(IsolateControl::default());
        let a = pool
            .send(Spawn {
                isolate_id: 1,
                script: script("a", INTERLEAVE),
                control: control.clone(),
                supervisor: None,
                load: edged::actors::pool::LoadShare::take(&Default::default()),
            })
            .await
            .unwrap()
            .expect("bind a");
        assert_eq!(text(&a, "/").await.unwrap(), "hi");
        wait_for_pool(&pool, 2).await; // refilled after the hand-out

        // A bad script fails to bind and the pool stays usable.
        let bad = pool
            .send(Spawn {
                isolate_id: 2,
                script: script("bad", "export default {"),
                control: Arc::new(IsolateControl::default()),
                supervisor: None,
                load: edged::actors::pool::LoadShare::take(&Default::default()),
            })
            .await
            .unwrap();
        assert!(matches!(bad, Err(EngineError::Script(m)) if m.starts_with("SyntaxError")));

        // Two tenants on the same thread never share globals.
        let b = pool
            .send(Spawn {
                isolate_id: 3,
                script: script("b", INTERLEAVE),
                control: Arc::new(IsolateControl::default()),
                supervisor: None,
                load: edged::actors::pool::LoadShare::take(&Default::default()),
            })
            .await
            .unwrap()
            .expect("bind b");
        assert_ne!(
            text(&a, "/mark").await.unwrap(),
            text(&b, "/mark").await.unwrap()
        );

        control.stop();
        wait_for(|| !a.connected()).await;
        System::current().stop();
    });
}

async fn wait_for_pool(pool: &Addr<edged::actors::IsolatePool>, n: usize) {
    for _ in 0..500 {
        if pool.send(PoolLevel).await.unwrap() >= n {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool did not reach {n} blank isolates");
}

#[test]
fn isolate_interleaves_requests_and_dies_on_cpu_limit() {
    actix_rt::System::new().block_on(async {
        let threads = IsolateThreads::start(1, 1, IsolateLimits::default(), Default::default());
        let exits = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = ExitLog(exits.clone()).start();
        let addr = threads
            .pool(0)
            .send(Spawn {
                isolate_id: 7,
                script: script("w", INTERLEAVE),
                control: Arc::new(IsolateControl::default()),
                supervisor: Some(log.recipient()),
                load: edged::actors::pool::LoadShare::take(&Default::default()),
            })
            .await
            .unwrap()
            .expect("bind");

        // /wait parks on a promise that only /release, a second request on the same
        // isolate, resolves: both finish only if requests interleave.
        let waiting = {
            let addr = addr.clone();
            actix_rt::spawn(async move { text(&addr, "/wait").await })
        };
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(text(&addr, "/release").await.unwrap(), "1");
        assert_eq!(waiting.await.unwrap().unwrap(), "released");

        // A runaway request is terminated; the isolate stops and reports why.
        assert_eq!(text(&addr, "/spin").await, Err(InvokeError::CpuLimit));
        wait_for(|| !exits.lock().is_empty()).await;
        assert_eq!(exits.lock()[0], Some(EngineError::CpuLimit));
        assert!(!addr.connected());
        System::current().stop();
    });
}

#[test]
fn supervisor_scales_replaces_and_drains() {
    actix_rt::System::new().block_on(async {
        let threads = IsolateThreads::start(2, 1, IsolateLimits::default(), Default::default());
        let config = IsolateConfig {
            min_warm: 1,
            max_isolates: 2,
            idle_reap_s: 1,
            ..IsolateConfig::default()
        };
        let supervisor = WorkerSupervisor::new(script("w", INTERLEAVE), threads, config);
        let table = supervisor.table();
        let sup = supervisor.start();

        // Cold start on Acquire.
        let slot = sup.send(Acquire).await.unwrap().expect("acquire");
        assert_eq!(table.len(), 1);
        assert_eq!(text(&slot.addr, "/").await.unwrap(), "hi");

        // Grow adds an isolate, up to max_isolates.
        sup.send(Grow).await.unwrap();
        wait_for(|| table.len() == 2).await;
        sup.send(Grow).await.unwrap();
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(table.len(), 2);

        // Idle isolates above min_warm are reaped (idle_reap_s = 1).
        wait_for(|| table.len() == 1).await;

        // A crashed isolate is replaced to keep min_warm.
        let (victim, _) = table.least_loaded();
        let victim = victim.unwrap();
        assert_eq!(
            text(&victim.addr, "/spin").await,
            Err(InvokeError::CpuLimit)
        );
        wait_for(|| {
            let (s, n) = table.least_loaded();
            n == 1 && s.map(|s| s.isolate_id) != Some(victim.isolate_id)
        })
        .await;

        // Drain waits for the request in flight, then stops everything.
        let (slot, _) = table.least_loaded();
        let slot = slot.unwrap();
        let guard = slot.enter();
        let waiting = {
            let addr = slot.addr.clone();
            actix_rt::spawn(async move { text(&addr, "/sleep").await })
        };
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        sup.send(Drain).await.unwrap();
        actix_rt::time::sleep(Duration::from_millis(400)).await;
        assert!(sup.connected(), "drained while a request was in flight");
        assert_eq!(waiting.await.unwrap().unwrap(), "slept");
        drop(guard);
        wait_for(|| !sup.connected() && !slot.addr.connected()).await;
        System::current().stop();
    });
}

#[test]
fn new_workers_spread_over_the_isolate_threads() {
    actix_rt::System::new().block_on(async {
        let threads = IsolateThreads::start(2, 1, IsolateLimits::default(), Default::default());
        let config = IsolateConfig {
            min_warm: 1,
            ..IsolateConfig::default()
        };
        let mut supervisors = Vec::new();
        for i in 0..6 {
            let s = WorkerSupervisor::new(
                script(&format!("w{i}"), INTERLEAVE),
                threads.clone(),
                config.clone(),
            )
            .start();
            s.send(Acquire).await.unwrap().expect("acquire");
            supervisors.push(s);
        }
        // Six single-isolate workers on two threads: three each, not six on one.
        assert_eq!(threads.loads(), vec![3, 3]);
        for s in &supervisors {
            s.send(Drain).await.unwrap();
        }
        wait_for(|| threads.loads() == vec![0, 0]).await;
        System::current().stop();
    });
}
