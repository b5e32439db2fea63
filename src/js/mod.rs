//! # js — the engine glue
//!
//! Role: everything that touches V8. It creates isolates from a startup snapshot,
//! binds them to a tenant's modules, runs requests through the tenant's `fetch`
//! handler and enforces the per-isolate limits. It knows nothing of actors or
//! HTTP: the `actors` layer owns isolates and drives them.
//!
//! Invariants:
//! - An isolate lives and dies on the thread that created it (`JsRuntime` is not
//!   `Send`).
//! - A [`BlankIsolate`] has no tenant code; [`BlankIsolate::bind`] consumes it and
//!   returns a [`Worker`] bound to exactly one worker version. Nothing turns a
//!   `Worker` back into a blank isolate, so a tenant's isolate never serves another.
//!   A Durable Object host (`BindMode::Objects`) serves many objects, all of one
//!   worker version; each object's storage calls name its slot (`durable.rs`).
//! - Tenant code can import only its own modules, `cloudflare:workers` and,
//!   with Node.js compatibility, the `node:` modules of `node.rs` (`loader.rs`); the runtime's internals (`Deno`, `__bootstrap`) are removed from
//!   the global scope before tenant code runs (`isolate.rs`), and the runtime's JS
//!   uses only intrinsics captured before any tenant code existed.
//! - Who the running code works for, and what it may still do (depth,
//!   subrequests, the waitUntil window, a Durable Object's slot), is kept in Rust
//!   and read from V8's request context (`context.rs`), never from a JS argument.
//! - Every entry into JavaScript is CPU-metered (`limits.rs`); a termination for CPU
//!   or heap is fatal to the isolate, never to the process.
//!
//! Where to look:
//! - `extension.rs`: the `edged` deno_core extension, its ops and the deno Web API
//!   extensions it builds on; `runtime/*.js`: the Workers global scope and dispatch.
//! - `snapshot.rs`: the startup snapshot; `isolate.rs`: blank isolates and binding;
//!   `worker.rs`: serving requests; `limits.rs`: the CPU watchdog; `loader.rs`:
//!   module resolution; `script.rs`: what a worker version is made of;
//!   `body.rs`: bodies as bytes or bounded streams across the engine boundary;
//!   `context.rs`: request contexts; `clock.rs`: Workers' frozen clock;
//!   `websocket.rs`: WebSocket ends across the engine boundary.

pub mod body;
pub mod cache;
pub mod clock;
pub mod compat;
pub mod context;
pub mod cpu;
pub mod durable;
pub mod egress;
pub mod error;
pub mod extension;
pub mod hibernation;
pub mod isolate;
pub mod kv;
pub mod late_bound;
pub mod limits;
pub mod loader;
pub mod memory;
pub mod node;
pub mod rpc;
pub mod script;
pub mod service;
pub mod snapshot;
pub mod websocket;
pub mod worker;
pub mod ws_client;

pub use body::{body_channel, next_joined, Body, BodySink, BodyStream, StreamSlot};
pub use cache::{CacheBackend, CachedResponse};
pub use egress::EgressPolicy;
pub use error::{EngineError, InvokeError};
pub use isolate::{BindMode, BlankIsolate, HostServices, IsolateLimits, RuntimePolicy};
pub use kv::{KvBackend, KvError, KvListOptions, KvListResult, KvPutOptions, KvValue};
pub use script::{
    AssetFile, Assets, Binding, HtmlHandling, InvokeRequest, InvokeResponse, Module,
    NotFoundHandling, RunWorkerFirst, TypedModule, WorkerScript,
};
pub use service::{ServiceBackend, ServiceSlot};
pub use websocket::{SocketSlot, WsEnd, WsMessage};
pub use worker::{Reply, Worker};
