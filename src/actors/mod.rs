//! # actors — isolates and workers as actix actors
//!
//! Role: owns every live isolate and decides which one serves a request. Built on
//! the `js` layer (engines) and the `state` layer (the deployment store); the
//! `http` layer talks to it.
//!
//! ```text
//!                 WorkerRegistry  (deploy / rollback / delete / restore, one at a time)
//!                      │ publishes WorkersView ──────────────▶ data plane reads it
//!          ┌───────────┴───────────┐
//!  WorkerSupervisor (api v3)   WorkerSupervisor (cache v1)   one per live version
//!          │ DispatchTable ───────────────────────────────▶ data plane picks least in flight
//!          │ Spawn                                          and sends Invoke directly
//!          ▼
//!  IsolatePool (thread 0)   IsolatePool (thread 1)   blank isolates, one pool per isolate thread
//!          │ bind + start on the same thread
//!          ▼
//!  IsolateActor ── Worker (js) ── V8 isolate          one tenant, never reused
//! ```
//!
//! Invariants:
//! - An isolate actor runs on the isolate thread that created its isolate, and is
//!   bound to exactly one worker version for its whole life.
//! - Control before requests: supervisors stop isolates through `IsolateControl`, a
//!   flag the isolate's driver checks before its mailbox; draining waits for
//!   requests in flight, never cuts them.
//! - A version becomes live only after one of its isolates has started; a failed
//!   start changes nothing.
//!
//! Durable Objects: `DurableObjectDirectory` (`directory.rs`) maps an object id to
//! its one `DurableObjectActor` (`durable_object.rs`), which owns the object's
//! SQLite storage and its slot in an `ObjectHost` (`object_host.rs`: one isolate
//! per worker version and isolate thread, shared by that version's objects), and
//! implements the input and output gates. Past `max_live` objects the directory evicts the
//! least recently used idle ones; after a redeploy it retires objects still
//! running the old version once they are idle.
//!
//! Around the workers: `cron.rs` (the `CronScheduler`, one per node, fires
//! `scheduled()` events through each worker's deployment) and `services.rs`
//! (service bindings: one worker's `env.X` calls another's deployment).
//!
//! Where to look: `isolate.rs` (the isolate actor and its driver), `pool.rs`
//! (isolate threads and blank pools), `supervisor.rs` (scaling, replacement,
//! draining), `deployment.rs` (dispatching one request), `registry.rs` (deploys).

pub mod account_sync;
pub mod cron;
pub mod deploy_sync;
pub mod deployment;
pub mod directory;
pub mod durable_object;
pub mod error;
pub mod isolate;
pub mod object_host;
pub mod pool;
pub mod registry;
pub mod services;
pub mod supervisor;

pub use deployment::{next_request_id, Deployment};
pub use directory::{DurableObjectDirectory, ForgetObject, Locate, WorkerGone};
pub use durable_object::{DurableObjectActor, ObjectInvoke};
pub use error::ActorError;
pub use isolate::{Invoke, IsolateActor, IsolateControl, IsolateExited};
pub use pool::{IsolatePool, IsolateThreads, PoolLevel, Spawn};
pub use registry::{
    Activated, Apply, Check, Cleanup, Delete, DeleteAccount, DeleteAt, Deploy, Restore, Rollback,
    WorkerRegistry, WorkersView,
};
pub use supervisor::{Acquire, DispatchTable, Drain, Grow, Slot, WorkerSupervisor};
