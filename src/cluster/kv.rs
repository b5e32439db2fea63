//! Workers KV across PoPs: one replicated write log (stream `EDGED_KV`), every
//! PoP a full replica that applies it in log order (`state::kv::replica`).
//!
//! - **Writes** ([`Log`], the `KvLog` the KV service writes through): a value
//!   too large for a record goes to the object store first, then the record
//!   is appended; it resolves on the engine's acknowledgement (R3, fsync),
//!   and the KV service then waits until this PoP applied it.
//! - **Tail** ([`follow`]): an ordered consumer from the sequence after the one
//!   applied here; records are applied in batches (whatever has arrived, up
//!   to 256), each batch's sequence persisted after its namespaces commit.
//!   Sequences are contiguous in this stream, so a gap means records aged
//!   out of the log while this PoP was away: it reloads from the snapshot
//!   (the object store's `latest`, every live key as of a sequence) and
//!   tails from there.
//! - **Snapshots**: every `kv_snapshot_interval_s` the live member with the
//!   lowest id writes one from its replica (between two batches, so it is
//!   exactly the state at its sequence) and uploads it; it is refreshed well
//!   within the log's age, so the log always holds what follows it.
//! - **Faults**: with the core unreachable, reads are served from the local
//!   replica and writes fail (`KV PUT failed: 503 storage unavailable: …`);
//!   the tail reconnects and resumes from what it applied.
//! - **Progress** (`edged_kv_applied_sequence`, `edged_kv_replication_behind`,
//!   `edged_kv_replication_lag_seconds`, `edged_kv_propagation_seconds`) is also
//!   announced with membership, so `GET /v1/cluster` shows every PoP's lag.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::engine::Buckets;
use super::Cluster;
use crate::state::kv::replica::{KvLog, KvRecord};
use crate::state::KvService;

pub const KV_APPLIED: &str = "edged_kv_applied_sequence";
pub const KV_BEHIND: &str = "edged_kv_replication_behind";
pub const KV_LAG: &str = "edged_kv_replication_lag_seconds";
pub const KV_PROPAGATION: &str = "edged_kv_propagation_seconds";
pub const KV_SNAPSHOTS: &str = "edged_kv_snapshots_total";
pub const KV_BAD_RECORDS: &str = "edged_kv_bad_records_total";

/// Records applied in one batch at most, and the bytes of values a batch
/// holds in memory at most (a value can be 25 MiB: a batch is applied as soon
/// as it passes this, whatever its count).
const BATCH: usize = 256;
const BATCH_BYTES: usize = 16 << 20;

/// This PoP's KV replication progress (announced with its membership).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct KvProgress {
    /// The last log sequence applied here.
    pub applied: u64,
    /// Records in the log not applied here yet (as of the last look).
    pub behind: u64,
    /// How old the oldest write not applied here is, in ms (0 when caught up).
    pub lag_ms: u64,
    /// This PoP has applied everything the log held when it started.
    pub caught_up: bool,
    /// Writes aged out of the log before this PoP applied them and no
    /// snapshot covered them: its replica misses them (an operator must
    /// reload it: stop it, remove `kv/`, start it).
    #[serde(default)]
    pub missing: bool,
}

/// The KV service's way into the log.
pub struct Log {
    cluster: Cluster,
}

impl KvLog for Log {
    fn append(
        &self,
        ns: &str,
        record: Bytes,
        blob: Option<(String, Bytes)>,
    ) -> futures::future::BoxFuture<'static, Result<u64, String>> {
        let cluster = self.cluster.clone();
        let ns = ns.to_owned();
        Box::pin(async move {
            let c = cluster.clone();
            cluster
                .run(async move {
                    let b = c.buckets().map_err(|e| e.to_string())?;
                    if let Some((name, value)) = blob {
                        b.kv_put_value(&name, value)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    b.kv_append(&ns, record).await.map_err(|e| e.to_string())
                })
                .await?
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Turns KV replication on for `kv` and starts tailing the log.
pub fn start(cluster: &Cluster, kv: Arc<KvService>, data_dir: PathBuf) -> Result<(), String> {
    let applied = kv.replicate(Arc::new(Log {
        cluster: cluster.clone(),
    }))?;
    cluster.inner.kv.lock().applied = applied;
    metrics::gauge!(KV_APPLIED).set(applied as f64);
    tracing::info!(
        applied,
        "KV replication on: resuming the log after the sequence applied here"
    );
    let c = cluster.clone();
    cluster.inner.handle.spawn(async move {
        let mut logged = false;
        loop {
            if let Ok(b) = c.buckets() {
                match follow(&c, &b, &kv, &data_dir).await {
                    Ok(()) => {}
                    Err(e) if !logged || !e.contains("unreachable") => {
                        tracing::warn!(error = %e, "KV log tail stopped; retrying");
                        logged = true;
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Ok(())
}

impl Cluster {
    /// This PoP's KV replication progress.
    pub fn kv_progress(&self) -> KvProgress {
        *self.inner.kv.lock()
    }

    /// Whether this PoP writes the KV snapshots (the live member with the
    /// lowest id).
    fn kv_snapshot_writer(&self) -> bool {
        let m = self.inner.members.read();
        m.placement.members().keys().next() == Some(&self.inner.me.id)
    }
}

/// Follows the log until something fails (the caller retries).
async fn follow(
    cluster: &Cluster,
    b: &Buckets,
    kv: &Arc<KvService>,
    data_dir: &std::path::Path,
) -> Result<(), String> {
    let (first, last) = b.kv_bounds().await.map_err(|e| e.to_string())?;
    // Records after what was applied here are gone (a log that aged out
    // entirely has `first = last + 1`).
    if kv.applied() + 1 < first && !restore_snapshot(b, kv, data_dir, first).await? {
        cluster.inner.kv.lock().missing = true;
    }
    let mut next = (kv.applied() + 1).max(first.min(last + 1));
    let mut tail = b.kv_tail(next).await.map_err(|e| e.to_string())?;
    let interval = Duration::from_secs(cluster.inner.config.kv_snapshot_interval_s);
    let mut snapshot_at = Instant::now() + interval;
    let mut look_at = Instant::now();
    let mut last_known = last;
    let mut last_applied_at = 0u64;
    report(cluster, kv.applied(), last_known, last_applied_at);
    loop {
        let mut batch = Vec::new();
        match tokio::time::timeout(Duration::from_millis(500), tail.next()).await {
            Err(_) => {}
            Ok(None) => return Err("the KV log's consumer ended".into()),
            Ok(Some(r)) => {
                batch.push(r.map_err(|e| e.to_string())?);
                while batch.len() < BATCH {
                    match tail.next().now_or_never() {
                        Some(Some(r)) => batch.push(r.map_err(|e| e.to_string())?),
                        Some(None) => return Err("the KV log's consumer ended".into()),
                        None => break,
                    }
                }
            }
        }
        if !batch.is_empty() {
            let mut records = Vec::with_capacity(batch.len());
            let mut bytes = 0usize;
            let count = batch.len();
            for (i, (seq, data)) in batch.into_iter().enumerate() {
                if seq < next {
                    continue;
                }
                if seq > next {
                    return Err(format!(
                        "the KV log skipped from {next} to {seq} (records aged out); reloading"
                    ));
                }
                next = seq + 1;
                match KvRecord::decode(data) {
                    Ok(mut rec) => {
                        if let Some(name) = rec.header.blob.take() {
                            rec.value = b
                                .kv_value(&name, crate::state::kv::MAX_VALUE_BYTES)
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        bytes += rec.value.len();
                        records.push((seq, rec));
                    }
                    Err(e) => {
                        metrics::counter!(KV_BAD_RECORDS).increment(1);
                        tracing::error!(seq, error = %e, "skipping a KV log record");
                    }
                }
                if bytes >= BATCH_BYTES || i + 1 == count {
                    // Skipped (malformed) records count as applied too.
                    let applied_to = next - 1;
                    if let Some((_, rec)) = records.last() {
                        last_applied_at = rec.header.at_ms;
                    }
                    apply(kv, std::mem::take(&mut records), applied_to).await?;
                    bytes = 0;
                    last_known = last_known.max(applied_to);
                }
            }
            report(cluster, kv.applied(), last_known, last_applied_at);
        }
        if look_at.elapsed() >= Duration::from_secs(1) {
            look_at = Instant::now();
            if let Ok((_, last)) = b.kv_bounds().await {
                last_known = last;
            }
            report(cluster, kv.applied(), last_known, last_applied_at);
        }
        if Instant::now() >= snapshot_at {
            snapshot_at = Instant::now() + interval;
            // Only a replica that has everything may stand for the others.
            let p = cluster.kv_progress();
            if cluster.kv_snapshot_writer() && p.caught_up && p.behind == 0 && !p.missing {
                write_snapshot(b, kv, data_dir).await;
            }
        }
    }
}

/// Applies records (in log order) and records `upto` as applied.
async fn apply(
    kv: &Arc<KvService>,
    records: Vec<(u64, KvRecord)>,
    upto: u64,
) -> Result<(), String> {
    let now = now_ms();
    for (_, rec) in &records {
        if rec.header.at_ms > 0 {
            metrics::histogram!(KV_PROPAGATION)
                .record(now.saturating_sub(rec.header.at_ms) as f64 / 1000.0);
        }
    }
    let k = kv.clone();
    tokio::task::spawn_blocking(move || k.apply(&records, upto))
        .await
        .map_err(|e| e.to_string())?
}

/// Updates the progress and its metrics.
fn report(cluster: &Cluster, applied: u64, last: u64, last_applied_at: u64) {
    let behind = last.saturating_sub(applied);
    let lag_ms = if behind == 0 || last_applied_at == 0 {
        0
    } else {
        now_ms().saturating_sub(last_applied_at)
    };
    let mut p = cluster.inner.kv.lock();
    p.applied = applied;
    p.behind = behind;
    p.lag_ms = lag_ms;
    if behind == 0 && !p.caught_up {
        p.caught_up = true;
        tracing::info!(applied, "KV replica caught up with the log");
    }
    metrics::gauge!(KV_APPLIED).set(applied as f64);
    metrics::gauge!(KV_BEHIND).set(behind as f64);
    metrics::gauge!(KV_LAG).set(lag_ms as f64 / 1000.0);
}

async fn write_snapshot(b: &Buckets, kv: &Arc<KvService>, data_dir: &std::path::Path) {
    // A file of its own: an upload still running from the last interval
    // keeps reading its own.
    let path = data_dir
        .join("kv")
        .join(format!("snapshot-{}.out", uuid::Uuid::new_v4().simple()));
    let (k, p) = (kv.clone(), path.clone());
    let started = Instant::now();
    let written = tokio::task::spawn_blocking(move || k.write_snapshot(&p))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let (seq, keys) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(error = %e, "cannot write the KV snapshot");
            return;
        }
    };
    // The upload does not hold the tail up: the file is not touched again
    // until the next snapshot, an interval later.
    let b = b.clone();
    tokio::spawn(async move {
        match b.kv_put_snapshot(&path).await {
            Ok(()) => {
                metrics::counter!(KV_SNAPSHOTS, "op" => "written").increment(1);
                tracing::info!(
                    seq,
                    keys,
                    ms = started.elapsed().as_millis() as u64,
                    "KV snapshot written"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot upload the KV snapshot"),
        }
        let _ = std::fs::remove_file(&path);
    });
}

/// The log no longer holds the records after what was applied here: reload
/// every namespace from the snapshot. `false`: the replica misses writes
/// (no snapshot, or one older than the log).
async fn restore_snapshot(
    b: &Buckets,
    kv: &Arc<KvService>,
    data_dir: &std::path::Path,
    first: u64,
) -> Result<bool, String> {
    let path = data_dir.join("kv").join("snapshot.in");
    let started = Instant::now();
    if !b.kv_snapshot(&path).await.map_err(|e| e.to_string())? {
        tracing::error!(
            applied = kv.applied(),
            first,
            "the KV log no longer holds the writes after what this PoP applied, and there is no snapshot: writes in between are missing here"
        );
        return Ok(false);
    }
    let k = kv.clone();
    let p = path.clone();
    let loaded = tokio::task::spawn_blocking(move || k.load_snapshot(&p))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let _ = std::fs::remove_file(&path);
    let seq = loaded?;
    metrics::counter!(KV_SNAPSHOTS, "op" => "loaded").increment(1);
    if seq + 1 < first {
        tracing::error!(
            seq,
            first,
            "the KV snapshot is older than the log: writes in between are missing here"
        );
    }
    let complete = seq + 1 >= first;
    tracing::info!(
        seq,
        ms = started.elapsed().as_millis() as u64,
        "KV replica reloaded from the snapshot"
    );
    Ok(complete)
}
