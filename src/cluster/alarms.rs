//! Durable Object alarms across the cluster: an idle object's alarm fires
//! even when its owner died.
//!
//! An object's alarm lives in its own database (so it is replicated with its
//! commits), and its owner's directory keeps it in the node's alarm index and
//! fires it. That covers an owner that lives, and an object that moves on its
//! next call (the new owner reads the alarm from the rebuilt database). It
//! does not cover an *idle* object whose owner died: nobody calls it, so
//! nobody takes it over. So the owner also records where each alarm is due
//! (`edged_alarms`, [`Entry`]: the object, the time, the node that set it) in
//! commit order, and every node watches those records. An entry whose node
//! is no longer a member, due within a moment, is *orphaned*; the first live
//! candidate of the ring for that object (the node a takeover places it on)
//! takes it over like any caller would — the engine's ownership record, the
//! object's log, its epoch marker — and activates it, which schedules the
//! alarm from the database, and records the entry as its own. Waking an
//! object is only ever an activation through the ownership protocol, so an
//! entry that is stale or forged says at most "look at this object".

use std::collections::HashMap;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::peer::WireAddress;
use super::Cluster;
use crate::js::durable::ObjectAddress;

/// Where one object's alarm is due.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub object: WireAddress,
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// The node that set it (its owner then).
    pub node: String,
}

/// Entries by key: those seen in the engine, or those waiting to be written
/// (`None`: a removal).
pub(super) type Entries = HashMap<String, Entry>;
pub(super) type Pending = HashMap<String, Option<Entry>>;

/// The key of an object's entry: its storage id first, then the owner digest.
fn key(address: &ObjectAddress) -> String {
    format!("{}.{}", address.storage, super::owner_key(address))
}

/// An entry as the engine stores it (`None`: a removal).
fn encode(entry: &Option<Entry>) -> Option<Bytes> {
    entry
        .as_ref()
        .map(|e| Bytes::from(serde_json::to_vec(e).unwrap_or_default()))
}

impl Cluster {
    /// This node's entry for an object's alarm at `at_ms` (`None`: none).
    fn alarm_entry(&self, address: &ObjectAddress, at_ms: Option<u64>) -> Option<Entry> {
        at_ms.map(|at_ms| Entry {
            object: address.into(),
            at_ms,
            node: self.inner.me.id.clone(),
        })
    }

    /// The owner changed an object's alarm (`None`: deleted): recorded in the
    /// engine in the order the changes were made here.
    pub fn publish_alarm(&self, address: &ObjectAddress, at_ms: Option<u64>) {
        let record = self.alarm_entry(address, at_ms);
        // Only the latest change of each object is written: what waits is
        // bounded by the objects, whatever the rate of changes.
        self.inner.alarm_pending.lock().insert(key(address), record);
        self.inner.alarm_wake.notify_one();
    }

    /// Records an object's alarm change now (a commit waits for it); `false`
    /// if the engine did not take it, in which case it is queued for
    /// [`Cluster::publish_alarm`]'s writer instead.
    pub async fn record_alarm(&self, address: &ObjectAddress, at_ms: Option<u64>) -> bool {
        let k = key(address);
        let value = encode(&self.alarm_entry(address, at_ms));
        let written = match self.buckets() {
            Ok(b) => {
                let kk = k.clone();
                matches!(
                    self.run(async move { b.set_alarm_entry(&kk, value).await })
                        .await,
                    Ok(Ok(()))
                )
            }
            Err(_) => false,
        };
        if written {
            // A change still queued for this object is older than this one.
            self.inner.alarm_pending.lock().remove(&k);
        } else {
            self.publish_alarm(address, at_ms);
        }
        written
    }

    /// A worker was deleted: the alarm entries of its objects go.
    pub(super) fn forget_alarms_of(&self, storage: &str) {
        let prefix = format!("{storage}.");
        let gone: Vec<String> = self
            .inner
            .alarm_entries
            .lock()
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut pending = self.inner.alarm_pending.lock();
        for key in gone {
            pending.insert(key, None);
        }
        drop(pending);
        self.inner.alarm_wake.notify_one();
    }

    /// Objects whose alarm is due within `ahead_ms` of `now_ms`, whose entry
    /// names a node that is no longer a member, and which this node would
    /// take over (it is their first live candidate).
    pub fn orphaned_alarms(&self, now_ms: u64, ahead_ms: u64) -> Vec<ObjectAddress> {
        if self.fenced() {
            return Vec::new();
        }
        let placement = self.placement();
        let me = &self.inner.me.id;
        self.inner
            .alarm_entries
            .lock()
            .values()
            .filter(|e| e.at_ms <= now_ms.saturating_add(ahead_ms))
            .filter(|e| e.node != *me && !placement.members().contains_key(&e.node))
            .map(|e| ObjectAddress::from(e.object.clone()))
            .filter(|a| placement.first(super::placement_digest(a), None) == Some(me.as_str()))
            .collect()
    }

    /// Writes the entries this node publishes, the latest of each object
    /// (a failed write is tried again, for a while).
    pub(super) async fn publish_alarms(self) {
        loop {
            self.inner.alarm_wake.notified().await;
            let batch = std::mem::take(&mut *self.inner.alarm_pending.lock());
            for (key, entry) in batch {
                self.write_alarm(&key, entry).await;
            }
        }
    }

    async fn write_alarm(&self, key: &str, entry: Option<Entry>) {
        let value = encode(&entry);
        let mut pause = std::time::Duration::from_millis(100);
        for attempt in 0..8 {
            let result = match self.buckets() {
                Ok(b) => b.set_alarm_entry(key, value.clone()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if attempt == 7 => {
                    tracing::warn!(error = %e, "cannot record a Durable Object alarm in the engine; it fires only on its owner");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Keeps this node's view of every alarm entry (the watch is made again
    /// every 30 s and when it ends).
    pub(super) async fn watch_alarms(self) {
        loop {
            let watch = match self.buckets() {
                Ok(b) => b.watch_alarms().await,
                Err(e) => Err(e),
            };
            let mut changes = match watch {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            let made = std::time::Instant::now();
            while made.elapsed() < std::time::Duration::from_secs(30) {
                match tokio::time::timeout(std::time::Duration::from_secs(1), changes.next()).await
                {
                    Ok(Some(change)) => {
                        let Some(key) = change.key.strip_prefix("a.") else {
                            continue;
                        };
                        let mut entries = self.inner.alarm_entries.lock();
                        match change
                            .value
                            .and_then(|v| serde_json::from_slice::<Entry>(&v).ok())
                        {
                            Some(e) => {
                                entries.insert(key.to_owned(), e);
                            }
                            None => {
                                entries.remove(key);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
    }
}
