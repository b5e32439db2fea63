//! # http — the node's listeners
//!
//! Role: the outermost layer. Two actix-web servers: the data plane (`data_plane.rs`:
//! route the request, run it in a worker) and the control plane
//! (`control_plane.rs`: deploy API, accounts and tokens, `/healthz`, `/metrics`;
//! `kv_admin.rs`: the KV API; `auth.rs`: who the caller is and what it may
//! see), started by
//! `server.rs`; in a cluster a third, the peer listener (`peer.rs`), takes
//! remote actor messages from other nodes. Route matching is `routes.rs`; Prometheus is `metrics.rs`;
//! a WebSocket the worker accepts is joined to the client's connection by
//! `websocket.rs`.
//!
//! Invariants:
//! - Every error leaves as `{"error":{"code","message"}}` (`error.rs`); stacks
//!   and internal details go to the log, never to the client.
//! - Bodies are read with a limit and never buffered past it (`body.rs`).
//! - The data plane never waits on the control plane's actors: it reads the
//!   published deployments and each version's dispatch table directly.

pub mod auth;
pub mod body;
pub mod control_plane;
pub mod data_plane;
pub mod encoding;
pub mod error;
pub mod kv_admin;
pub mod metrics;
pub mod peer;
pub mod routes;
pub mod server;
pub mod tls;
pub mod websocket;

pub use error::HttpError;
pub use server::{start, Node, ServeError};
