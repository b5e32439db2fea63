//! The startup snapshot: the runtime's JS (deno's Web APIs and `src/js/runtime/`)
//! evaluated once per process and serialized, so every isolate starts from a heap
//! that already holds it instead of re-running it.
//!
//! Made lazily on first use (tens of milliseconds) and kept for the life of the
//! process. Making it at build time would need a second copy of deno_core and V8
//! compiled for the build script; once per process is cheap enough.

use std::sync::OnceLock;

use deno_core::{v8, JsRuntime, JsRuntimeForSnapshot, RuntimeOptions};

use super::extension::extensions;

/// The process-wide snapshot. The first call builds it.
pub fn startup_snapshot() -> &'static [u8] {
    static SNAPSHOT: OnceLock<&'static [u8]> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        // Initialise V8 for serving before anything else does: deno_core would
        // otherwise initialise it process-wide with its snapshot-building flags
        // (`--predictable --random-seed=42`), which would give every isolate the
        // same Math.random sequence and single-threaded garbage collection.
        // Operators may pass extra V8 flags (e.g. heap tuning) in EDGED_V8_FLAGS.
        if let Ok(flags) = std::env::var("EDGED_V8_FLAGS") {
            v8::V8::set_flags_from_string(&flags);
        }
        JsRuntime::init_platform(None, false);
        // On a thread of its own: the snapshot's isolate is left entered (deno_core
        // leaks it), which must not disturb the isolates of a real isolate thread.
        std::thread::spawn(|| {
            let mut runtime = JsRuntimeForSnapshot::new(RuntimeOptions {
                extensions: extensions(true),
                ..Default::default()
            });
            warm_up(&mut runtime);
            let snapshot = runtime.snapshot();
            tracing::debug!(bytes = snapshot.len(), "startup snapshot built");
            &*Box::leak(snapshot)
        })
        .join()
        .expect("building the startup snapshot failed")
    })
}

/// Runs the request path (`warmup` in `10_worker.js`) before serializing, so the
/// snapshot carries compiled code for it. Without this, every isolate's first
/// request compiles Request, Response, Headers and the dispatch path lazily, which
/// costs milliseconds on every cold start. A failure only costs speed.
fn warm_up(runtime: &mut JsRuntimeForSnapshot) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let result = rt.block_on(async {
        let promise =
            runtime.execute_script("ext:edged/warmup", "globalThis.__edged_internals.warmup()")?;
        let done = Box::pin(runtime.resolve(promise));
        runtime
            .with_event_loop_promise(done, deno_core::PollEventLoopOptions::default())
            .await
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "runtime warm-up failed; cold starts will be slower");
    }
}
