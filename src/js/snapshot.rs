//! The startup snapshot: the runtime's JS (deno's Web APIs and `src/js/runtime/`)
//! evaluated once per process and serialized, so every isolate starts from a heap
//! that already holds it instead of re-running it.
//!
//! Made lazily on first use (tens of milliseconds) and kept for the life of the
//! process. Making it at build time would need a second copy of deno_core and V8
//! compiled for the build script; once per process is cheap enough.

use std::sync::OnceLock;

use deno_core::{JsRuntime, JsRuntimeForSnapshot, RuntimeOptions};

use super::extension::extensions;

/// The process-wide snapshot. The first call builds it.
pub fn startup_snapshot() -> &'static [u8] {
    static SNAPSHOT: OnceLock<&'static [u8]> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        // Initialise V8 for serving before anything else does: deno_core would
        // otherwise initialise it process-wide with its snapshot-building flags
        // (`--predictable --random-seed=42`), which would give every isolate the
        // same Math.random sequence and single-threaded garbage collection.
        JsRuntime::init_platform(None, false);
        // On a thread of its own: the snapshot's isolate is left entered (deno_core
        // leaks it), which must not disturb the isolates of a real isolate thread.
        std::thread::spawn(|| {
            let runtime = JsRuntimeForSnapshot::new(RuntimeOptions {
                extensions: extensions(true),
                ..Default::default()
            });
            &*Box::leak(runtime.snapshot())
        })
        .join()
        .expect("building the startup snapshot failed")
    })
}
