//! Engine-level tests: a blank isolate bound to a script, driven without actors.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::task::Poll;

use edged::js::{
    BlankIsolate, EngineError, InvokeError, InvokeRequest, InvokeResponse, IsolateLimits, Worker,
    WorkerScript,
};
use futures::channel::oneshot;

fn script(source: &str) -> WorkerScript {
    let mut modules = BTreeMap::new();
    modules.insert("worker.js".to_owned(), source.into());
    WorkerScript {
        crons: Vec::new(),
        name: "t".into(),
        version: 1,
        main_module: "worker.js".into(),
        modules,
        bindings: vec![],
        compatibility_date: None,
        compatibility_flags: Vec::new(),
        deployed_at_ms: 0,
        assets: None,
        account: "default".into(),
        storage: "0".repeat(32),
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

async fn bind(source: &str) -> Result<Worker, EngineError> {
    BlankIsolate::new(IsolateLimits::default())
        .unwrap()
        .bind(&script(source), &Default::default())
        .await
}

async fn invoke(worker: &mut Worker, url: &str) -> Result<InvokeResponse, InvokeError> {
    let (tx, mut rx) = oneshot::channel();
    let req = InvokeRequest {
        cf: None,
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
        method: "GET".into(),
        url: url.into(),
        headers: vec![],
        body: None,
    };
    worker.start(1, req, tx).expect("isolate alive");
    poll_fn(|cx| {
        if let Poll::Ready(e) = worker.poll(cx) {
            panic!("isolate died: {e}");
        }
        match rx.try_recv() {
            Ok(Some(r)) => Poll::Ready(r),
            _ => Poll::Pending,
        }
    })
    .await
}

#[test]
fn hello_world() {
    run(async {
        let mut w = bind("export default { async fetch(req) { return new Response('hi ' + new URL(req.url).pathname, {headers: {'x-a': 'b'}}); } }").await.unwrap();
        let r = invoke(&mut w, "http://x/path").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body.unwrap().as_bytes().unwrap()[..], b"hi /path");
        assert!(r.headers.iter().any(|(k, v)| k == b"x-a" && v == b"b"));
    });
}

#[test]
fn syntax_error_has_location() {
    run(async {
        let err = bind("export default {\n  fetch() { return 1 +; }\n}")
            .await
            .err()
            .unwrap();
        let EngineError::Script(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.starts_with("SyntaxError"), "{msg}");
        assert!(msg.contains("worker.js:2:"), "{msg}");
    });
}
