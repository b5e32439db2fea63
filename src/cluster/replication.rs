//! Durable Object replication: every commit of an object owned here goes to
//! its log in the engine before the object's output gate opens, and a node
//! that becomes an object's owner rebuilds the object from that log.
//!
//! Protocol (per object, on subject `dolog.<storage id>.<digest>` of stream `EDGED_DOLOG`):
//! - **begin** ([`Cluster::begin_object`]): before an activation, the owner
//!   reads the log's last sequence; unless its local database is known to be
//!   exactly that state (it wrote it, and nothing was appended since), it
//!   rebuilds the database from the log (`state::replica::Rebuild`); then it
//!   appends its **epoch marker** conditional on that sequence. The marker's
//!   acknowledgement is the owner's licence: from then on every append names
//!   the sequence before it, so an older owner that wakes up (paused,
//!   partitioned, or simply not yet aware) can never append again — its next
//!   append is refused and it resets the object, failing what it held.
//! - **commit** ([`ObjectLog::append`]): the records of one group commit
//!   (`state::replica::Pages::encode`), each conditional on the previous
//!   one; the held responses are released only when the last is acknowledged
//!   (the core has it on a quorum's disks, `sync_interval: always`). An image
//!   (snapshot) lets the log before it be purged, so a restore reads at most
//!   about twice the database's size.
//! - **reads are fenced by the lease**: a node whose membership lease lapsed
//!   releases nothing (it may no longer be the owner), and a new owner takes an
//!   object only after the old owner's membership record has expired in the
//!   engine, which happens a lease after the old owner's last renewal — later
//!   than the old owner's own fence (measured from the send time of that
//!   renewal).
//!
//! Any failure to append (refused, timed out, core unreachable) marks the
//! local database as no longer the log's, so the next activation rebuilds it:
//! a write whose outcome is unknown is never served from local state alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::engine::EngineError;
use super::Cluster;
use crate::js::durable::ObjectAddress;
use crate::js::InvokeError;
use crate::state::replica::{self, Pages};

pub const REPLICATION_SECONDS: &str = "edged_do_replication_seconds";
pub const REPLICATED_BYTES: &str = "edged_do_replicated_bytes";
pub const SNAPSHOTS: &str = "edged_do_snapshots_total";
pub const FENCING_REJECTIONS: &str = "edged_do_fencing_rejections_total";
pub const RESTORE_SECONDS: &str = "edged_do_restore_seconds";
pub const RESTORES: &str = "edged_do_restores_total";
pub const TAKEOVERS: &str = "edged_do_takeovers_total";

/// This owner's handle on one object's log.
pub struct ObjectLog {
    cluster: Cluster,
    key: String,
    last: AtomicU64,
}

/// The local database matches the log up to `seq` (kept in memory: after a
/// restart every object is rebuilt from its log once).
#[derive(Clone, Copy, Debug)]
pub(super) struct Applied {
    pub seq: u64,
    pub has_base: bool,
}

fn unavailable(why: impl std::fmt::Display) -> InvokeError {
    InvokeError::Cluster(format!("Durable Object unavailable: {why} (retryable)"))
}

impl Cluster {
    /// Makes this node the acting owner of `address` (which it owns by the
    /// engine's record): brings `db` up to the object's log and appends this
    /// owner's epoch marker. Returns the log handle and whether the log holds
    /// a base image of the database (if not, the first commit ships one).
    pub async fn begin_object(
        &self,
        address: &ObjectAddress,
        db: PathBuf,
    ) -> Result<(Arc<ObjectLog>, bool), InvokeError> {
        if !self.lease_valid() {
            return Err(unavailable("this node's membership lease lapsed"));
        }
        let key = super::owner_key(address);
        let epoch = self
            .inner
            .owners
            .read()
            .get(&key)
            .map(|o| o.epoch)
            .unwrap_or(0);
        let buckets = self.buckets().map_err(unavailable)?;
        let me = self.inner.me.id.clone();
        let this = self.clone();
        // The log's subject names the worker's storage id, so a deleted
        // worker's logs go with one purge ([`Cluster::forget_storage`]).
        let k = format!("{}.{key}", address.storage);
        let owner_k = key.clone();
        let outcome = self
            .run(async move {
                // Only the node the engine's record names may begin (an alarm
                // left on a former owner must not take the object back).
                let owner = buckets
                    .owner(&owner_k)
                    .await?
                    .and_then(|(v, _)| serde_json::from_slice::<super::OwnerRecord>(&v).ok());
                if owner.as_ref().map(|o| o.node.as_str()) != Some(me.as_str()) {
                    return Err(EngineError::Unreachable(format!(
                        "this node does not own the object (its owner is {})",
                        owner
                            .map(|o| o.node)
                            .unwrap_or_else(|| "not recorded".into())
                    )));
                }
                for _ in 0..5 {
                    let last = buckets.log_last(&k).await?;
                    let known = this.inner.applied.lock().get(&k).copied();
                    let has_base = match known {
                        Some(a) if a.seq == last => a.has_base,
                        // A log that is empty: the object is new to the
                        // cluster; a database already here (a node that ran
                        // standalone before) becomes its base image.
                        _ if last == 0 => false,
                        _ => restore(&buckets, &k, last, &db).await?,
                    };
                    let marker = Bytes::from(replica::epoch_record(&me, epoch));
                    match buckets.log_append(&k, marker, last).await {
                        Ok(seq) => {
                            this.inner
                                .applied
                                .lock()
                                .insert(k.clone(), Applied { seq, has_base });
                            return Ok((seq, has_base));
                        }
                        // Someone appended meanwhile (an old owner's last
                        // acknowledged commit): read the log again.
                        Err(EngineError::Conflict) => {
                            metrics::counter!(FENCING_REJECTIONS, "at" => "begin").increment(1);
                            this.inner.applied.lock().remove(&k);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(EngineError::Unreachable(
                    "the object's log keeps changing".into(),
                ))
            })
            .await
            .map_err(unavailable)?;
        let (seq, has_base) = outcome.map_err(unavailable)?;
        Ok((
            Arc::new(ObjectLog {
                cluster: self.clone(),
                key: format!("{}.{key}", address.storage),
                last: AtomicU64::new(seq),
            }),
            has_base,
        ))
    }

    /// A worker was deleted: its objects' logs and alarm entries go (best
    /// effort: every node applying the delete purges, and a purge of nothing
    /// is harmless).
    pub fn forget_storage(&self, storage: &str) {
        self.forget_alarms_of(storage);
        let Ok(buckets) = self.buckets() else {
            return;
        };
        let storage = storage.to_owned();
        let this = self.clone();
        self.inner.handle.spawn(async move {
            let prefix = format!("{storage}.");
            this.inner
                .applied
                .lock()
                .retain(|k, _| !k.starts_with(&prefix));
            if let Err(e) = buckets.log_purge_storage(&storage).await {
                tracing::warn!(error = %e, "cannot purge a deleted worker's Durable Object logs");
            }
        });
    }

    /// Whether this node's membership lease still holds (its last
    /// acknowledged renewal was sent less than a lease ago).
    pub fn lease_valid(&self) -> bool {
        self.inner.health.lock().lease_holds(self.inner.lease)
    }
}

/// Rebuilds `db` from the object's log up to `last`; whether the log had a
/// base image (without one the object is new and its database starts empty).
async fn restore(
    buckets: &super::engine::Buckets,
    key: &str,
    last: u64,
    db: &Path,
) -> Result<bool, EngineError> {
    let started = Instant::now();
    let rebuilt = db.with_extension("restore");
    // Bounded: the log is read no faster than the file is written.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (target, dest) = (rebuilt.clone(), db.to_owned());
    let apply = tokio::task::spawn_blocking(move || -> Result<(bool, u64), String> {
        let fail = |e: crate::state::StateError| e.to_string();
        let mut r = replica::Rebuild::create(&target).map_err(fail)?;
        while let Some(record) = rx.blocking_recv() {
            r.apply(&record).map_err(fail)?;
        }
        let bytes = r.bytes;
        let has_base = r.finish().map_err(fail)?;
        replica::install(&target, &dest, has_base).map_err(fail)?;
        Ok((has_base, bytes))
    });
    let read = buckets
        .log_read(key, last, |record| {
            let tx = tx.clone();
            async move {
                tx.send(record)
                    .await
                    .map_err(|_| "the restore stopped".to_owned())
            }
        })
        .await;
    drop(tx);
    let applied = apply
        .await
        .map_err(|e| format!("restore failed: {e}"))
        .and_then(|r| r.map_err(|e| format!("cannot rebuild the object from its log: {e}")));
    // The applier's error first: when it stops, the reader only sees "the
    // restore stopped".
    let (has_base, bytes) = match (applied, read) {
        (Ok(done), Ok(())) => done,
        (Err(e), _) => {
            let _ = std::fs::remove_file(&rebuilt);
            return Err(EngineError::Unreachable(e));
        }
        (Ok(_), Err(e)) => {
            let _ = std::fs::remove_file(&rebuilt);
            return Err(e);
        }
    };
    metrics::counter!(RESTORES).increment(1);
    metrics::histogram!(RESTORE_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::info!(
        object = key,
        bytes,
        has_base,
        ms = started.elapsed().as_millis() as u64,
        "object rebuilt from its log"
    );
    Ok(has_base)
}

/// Why an append failed: the engine, or reading what was to be shipped.
enum AppendError {
    Engine(EngineError),
    Local(String),
}

impl From<EngineError> for AppendError {
    fn from(e: EngineError) -> Self {
        AppendError::Engine(e)
    }
}

impl ObjectLog {
    /// Appends one commit; `Ok` once all of it is acknowledged. Any error
    /// leaves the local database unknown (the object must reset).
    pub async fn append(self: &Arc<Self>, pages: Pages) -> Result<(), String> {
        let this = self.clone();
        let started = Instant::now();
        let bytes = pages.bytes();
        let image = pages.image;
        let result = self
            .cluster
            .run(async move {
                let buckets = this.cluster.buckets()?;
                let mut last = this.last.load(Ordering::Acquire);
                let mut first = None;
                for record in pages.records() {
                    let record = record.map_err(|e| AppendError::Local(e.to_string()))?;
                    let seq = buckets.log_append(&this.key, record.into(), last).await?;
                    first.get_or_insert(seq);
                    last = seq;
                }
                this.last.store(last, Ordering::Release);
                this.cluster.inner.applied.lock().insert(
                    this.key.clone(),
                    Applied {
                        seq: last,
                        has_base: true,
                    },
                );
                if let (true, Some(first)) = (image, first) {
                    metrics::counter!(SNAPSHOTS).increment(1);
                    if let Err(e) = buckets.log_purge_before(&this.key, first).await {
                        // The older records stay until the next image.
                        tracing::warn!(error = %e, "cannot purge an object's log before its snapshot");
                    }
                }
                Ok::<_, AppendError>(())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.map_err(|e| match e {
                    AppendError::Engine(EngineError::Conflict) => {
                        metrics::counter!(FENCING_REJECTIONS, "at" => "commit").increment(1);
                        "another node took the object over (its log moved on)".to_owned()
                    }
                    AppendError::Engine(other) => other.to_string(),
                    AppendError::Local(why) => why,
                })
            });
        match &result {
            Ok(()) => {
                metrics::histogram!(REPLICATION_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::histogram!(REPLICATED_BYTES).record(bytes as f64);
            }
            Err(_) => self.invalidate(),
        }
        result
    }

    /// Records where the object's alarm is now due (`alarms.rs`), once its
    /// commit is in the log; whether the engine took it.
    pub async fn record_alarm(&self, address: &ObjectAddress, at_ms: Option<u64>) -> bool {
        self.cluster.record_alarm(address, at_ms).await
    }

    /// The local database is no longer known to match the log.
    pub fn invalidate(&self) {
        self.cluster.inner.applied.lock().remove(&self.key);
    }

    /// Whether responses may be released (this node's lease holds).
    pub fn lease_valid(&self) -> bool {
        self.cluster.lease_valid()
    }
}
