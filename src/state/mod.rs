//! # state — what a node keeps on disk
//!
//! Role: durable node state under the data directory. Today: the deployment store
//! (`deployments.rs`), every worker version and which one is active; Workers KV
//! (`kv/`), an origin store per namespace behind an edge cache; static asset
//! blobs (`assets.rs`); Durable Object
//! storage (`durable.rs`, `alarms.rs`) with tenant SQL confined by
//! `sql_sandbox.rs`; and one in-memory piece, the Cache API's
//! store (`http_cache.rs`), which a restart empties.
//!
//! Invariants:
//! - Every acknowledged change is durable (SQLite WAL with `synchronous=FULL`).
//! - Stored versions are immutable; deploy, rollback and delete only move the
//!   active pointer or remove a worker, each in one transaction, so nothing is ever
//!   half-applied.
//! - Calls block on SQLite: callers on async threads use `spawn_blocking` or keep
//!   them to rare control-plane paths.

pub mod accounts;
pub mod alarms;
pub mod assets;
pub mod deployments;
pub mod durable;
pub mod error;
pub mod hosts;
pub mod http_cache;
pub mod kv;
pub mod names;
pub mod private_file;
pub mod replica;
pub mod secrets;
pub mod sql_sandbox;

pub use accounts::{Account, AccountRemoval, TokenInfo};
pub use deployments::{Deleted, DeploymentStore, StoredVersion, WorkerRecord, DEFAULT_ACCOUNT};
pub use error::StateError;
pub use http_cache::HttpCache;
pub use kv::KvService;
