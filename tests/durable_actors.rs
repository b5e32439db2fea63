//! Actor-level tests of Durable Objects: the directory and object actors driven
//! by their messages, without HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use edged::actors::{
    Deploy, DurableObjectDirectory, IsolateThreads, Locate, ObjectInvoke, WorkerRegistry,
};
use edged::config::IsolateConfig;
use edged::js::durable::{DurableObjectSlot, ObjectAddress};
use edged::js::{Binding, HostServices, InvokeRequest, IsolateLimits, WorkerScript};

const SCRIPT: &str = r#"
export class Counter {
  constructor(ctx) { this.ctx = ctx; this.token = crypto.randomUUID(); }
  async fetch(request) {
    if (new URL(request.url).pathname === "/token") return new Response(this.token);
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    this.ctx.storage.put("v", v);
    return new Response(String(v));
  }
}
export default { fetch() { return new Response("worker"); } };
"#;

fn request(path: &str) -> InvokeRequest {
    InvokeRequest {
        cf: None,
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
        method: "GET".into(),
        url: format!("http://object{path}"),
        headers: vec![],
        body: None,
    }
}

fn address(storage: &str, id: u8) -> ObjectAddress {
    ObjectAddress {
        worker: "objects".into(),
        storage: storage.into(),
        class_name: "Counter".into(),
        id: format!("{id:064x}"),
        name: None,
    }
}

async fn text(addr: &Addr<edged::actors::DurableObjectActor>, path: &str) -> String {
    let r = addr
        .send(ObjectInvoke {
            request_id: 1,
            request: request(path),
        })
        .await
        .expect("mailbox")
        .expect("event");
    String::from_utf8(
        r.body
            .and_then(|b| b.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default(),
    )
    .unwrap()
}

/// The directory, and the storage id the registry gave the worker.
async fn setup(
    dir: &std::path::Path,
    hibernate_after: Duration,
) -> (Addr<DurableObjectDirectory>, String) {
    let store = std::sync::Arc::new(edged::state::DeploymentStore::open(dir).unwrap());
    let slot = DurableObjectSlot::default();
    let host = HostServices {
        durable_objects: slot.clone(),
        ..Default::default()
    };
    let threads = IsolateThreads::start(2, 1, IsolateLimits::default(), host);
    let registry = WorkerRegistry::new(store, threads.clone(), IsolateConfig::default());
    let view = registry.view();
    let registry = registry.start();
    let script = WorkerScript {
        crons: Vec::new(),
        name: "objects".into(),
        version: 0,
        main_module: "worker.js".into(),
        modules: BTreeMap::from([("worker.js".to_owned(), SCRIPT.into())]),
        bindings: vec![Binding::DurableObjectNamespace {
            name: "C".into(),
            class_name: "Counter".into(),
        }],
        compatibility_date: None,
        compatibility_flags: Vec::new(),
        deployed_at_ms: 0,
        assets: None,
        account: "default".into(),
        storage: "0".repeat(32),
    };
    registry
        .send(Deploy {
            script,
            routes: vec![],
            hosts: vec![],
        })
        .await
        .unwrap()
        .expect("deploy");
    let directory =
        DurableObjectDirectory::new(view.clone(), threads, dir.to_owned(), hibernate_after, 1000)
            .start();
    slot.set(edged::actors::directory::backend(directory.clone()));
    let storage = view
        .get("objects")
        .expect("deployed")
        .script
        .storage
        .clone();
    (directory, storage)
}

#[test]
fn directory_keeps_one_actor_per_id_and_the_actor_serializes_events() {
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let (directory, storage) = setup(dir.path(), Duration::from_secs(600)).await;
        let address = |id| address(&storage, id);

        // Concurrent locates of one id activate one actor.
        let locates: Vec<_> = (0..8).map(|_| directory.send(Locate(address(1)))).collect();
        let addrs: Vec<_> = futures::future::join_all(locates)
            .await
            .into_iter()
            .map(|r| r.unwrap().expect("locate"))
            .collect();
        assert!(
            addrs.windows(2).all(|w| w[0] == w[1]),
            "more than one actor for one id"
        );
        let other = directory.send(Locate(address(2))).await.unwrap().unwrap();
        assert_ne!(addrs[0], other);

        // 50 events sent at once: each sees the previous one's write.
        let sends: Vec<_> = (0..50).map(|_| text(&addrs[0], "/inc")).collect();
        let mut seen: Vec<u64> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|s| s.parse().unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (1..=50).collect::<Vec<_>>());
        assert_eq!(
            text(&other, "/inc").await,
            "1",
            "objects have separate storage"
        );
        System::current().stop();
    });
}

#[test]
fn hibernated_object_is_reactivated_with_its_storage() {
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let (directory, storage) = setup(dir.path(), Duration::from_millis(200)).await;
        let address = |id| address(&storage, id);
        let first = directory.send(Locate(address(7))).await.unwrap().unwrap();
        assert_eq!(text(&first, "/inc").await, "1");
        let token = text(&first, "/token").await;
        for _ in 0..100 {
            if !first.connected() {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!first.connected(), "object did not hibernate");
        let second = directory.send(Locate(address(7))).await.unwrap().unwrap();
        assert_ne!(text(&second, "/token").await, token, "not a fresh instance");
        assert_eq!(
            text(&second, "/inc").await,
            "2",
            "storage lost across hibernation"
        );
        System::current().stop();
    });
}
