//! Workers KV on one node: an origin store per namespace (`store.rs`, SQLite) and
//! an edge cache in front of all of them (`cache.rs`), with Workers' limits and
//! error messages (checked here, once, for both the JS binding and the control
//! plane).
//!
//! Consistency, as in Workers: a write is visible to reads on the same node as
//! soon as its `put` resolves (the write updates this node's cache when it
//! commits); values cached from elsewhere may be stale for up to their
//! `cacheTtl`. Durability: a `put` resolves only after its SQLite transaction is
//! on disk. SQLite work runs on tokio's blocking pool, never on isolate or HTTP
//! threads; a cached read never leaves the calling thread.
//!
//! In a cluster ([`KvService::replicate`]) writes go through one replicated log
//! instead of straight to the store: see [`replica`].

pub mod cache;
pub mod replica;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

use self::cache::{Cached, EdgeCache};
use self::store::KvStore;
use crate::js::kv::{KvFuture, KvListKey};
use crate::js::{KvBackend, KvError, KvListOptions, KvListResult, KvPutOptions, KvValue};

pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 25 << 20;
pub const MAX_METADATA_BYTES: usize = 1024;
pub const MIN_EXPIRATION_TTL: u64 = 60;
pub const MAX_LIST_LIMIT: usize = 1000;

const OPS: &str = "edged_kv_operations_total";
const CACHE_HITS: &str = "edged_kv_cache_hits_total";
const CACHE_MISSES: &str = "edged_kv_cache_misses_total";
const BYTES_STORED: &str = "edged_kv_bytes_stored";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Namespace names: `[A-Za-z0-9_-]{1,64}` (they name files; `state::names`).
pub fn valid_namespace(name: &str) -> bool {
    super::names::check_namespace(name).is_ok()
}

fn check_key(op: &str, key: &str) -> Result<(), KvError> {
    if key.is_empty() || key == "." || key == ".." {
        return Err(KvError::Invalid(format!(
            "KV {op} failed: 400 Invalid key name: a key cannot be empty, \".\" or \"..\"."
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "KV {op} failed: 414 UTF-8 encoded length of {} exceeds key length limit of {MAX_KEY_BYTES}.",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a `put` against Workers' limits (key, value size, metadata size,
/// expiration) without writing anything.
pub fn check_put(key: &str, value_len: usize, options: &KvPutOptions) -> Result<(), KvError> {
    check_key("PUT", key)?;
    if value_len > MAX_VALUE_BYTES {
        return Err(KvError::Invalid(format!(
            "KV PUT failed: 413 Value length of {value_len} exceeds limit of {MAX_VALUE_BYTES}."
        )));
    }
    if let Some(m) = &options.metadata {
        if m.len() > MAX_METADATA_BYTES {
            return Err(KvError::Invalid(format!(
                "KV PUT failed: 413 Metadata length of {} exceeds limit of {MAX_METADATA_BYTES}.",
                m.len()
            )));
        }
    }
    expiration(options, now_unix()).map(|_| ())
}

/// Turns put options into an absolute expiration, checking Workers' limits.
fn expiration(options: &KvPutOptions, now: u64) -> Result<Option<u64>, KvError> {
    let bad = |m: String| Err(KvError::Invalid(format!("KV PUT failed: 400 {m}")));
    if let Some(ttl) = options.expiration_ttl {
        if !ttl.is_finite() || ttl < MIN_EXPIRATION_TTL as f64 {
            return bad(format!(
                "Invalid expiration_ttl of {ttl}. Expiration TTL must be at least {MIN_EXPIRATION_TTL}."
            ));
        }
        return Ok(Some(now + ttl as u64));
    }
    if let Some(at) = options.expiration {
        if !at.is_finite() || at < (now + MIN_EXPIRATION_TTL) as f64 {
            return bad(format!(
                "Invalid expiration of {at}. Expiration times must be at least {MIN_EXPIRATION_TTL} seconds in the future."
            ));
        }
        return Ok(Some(at as u64));
    }
    Ok(None)
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    tracing::error!(error = %e, "KV store failure");
    let text = e.to_string();
    if text.contains("database or disk is full") || text.contains("No space left on device") {
        return KvError::Unavailable(
            "KV write failed: 507 Insufficient Storage: the node's disk is full; nothing was written"
                .into(),
        );
    }
    KvError::Unavailable(format!("KV storage failure: {e}"))
}

pub struct KvService {
    dir: PathBuf,
    stores: Mutex<HashMap<String, Arc<KvStore>>>,
    cache: Arc<EdgeCache>,
    default_ttl: Duration,
    /// Cluster mode: writes go through the log, this node applies it.
    replica: std::sync::OnceLock<Replica>,
}

struct Replica {
    log: Arc<dyn replica::KvLog>,
    /// The last log sequence applied here.
    applied: tokio::sync::watch::Sender<u64>,
    path: PathBuf,
}

/// How long a write waits for this node to apply it after the engine
/// acknowledged it (it is durable either way; past this it resolves anyway).
const APPLY_WAIT: Duration = Duration::from_secs(5);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl KvService {
    /// KV under `<data_dir>/kv`, with an edge cache of `cache_bytes`.
    pub fn new(data_dir: &std::path::Path, cache_bytes: usize, default_ttl: Duration) -> Arc<Self> {
        Arc::new(KvService {
            dir: data_dir.to_owned(),
            stores: Mutex::new(HashMap::new()),
            cache: Arc::new(EdgeCache::new(cache_bytes)),
            default_ttl,
            replica: std::sync::OnceLock::new(),
        })
    }

    /// Cluster mode: from now on writes append to `log` and resolve once this
    /// node has applied them ([`KvService::apply`]). Returns the sequence
    /// applied here before (persisted across restarts).
    pub fn replicate(&self, log: Arc<dyn replica::KvLog>) -> Result<u64, String> {
        let path = replica::applied_path(&self.dir);
        let applied = replica::read_applied(&path)?;
        let (tx, _) = tokio::sync::watch::channel(applied);
        self.replica
            .set(Replica {
                log,
                applied: tx,
                path,
            })
            .map_err(|_| "KV replication is already on".to_owned())?;
        Ok(applied)
    }

    /// The last log sequence applied here (0 without replication).
    pub fn applied(&self) -> u64 {
        self.replica.get().map(|r| *r.applied.borrow()).unwrap_or(0)
    }

    /// Applies records of the log, in log order, then records `upto` (the
    /// batch's last sequence) as applied. Values stored outside the log must
    /// be resolved into the records already. Blocking.
    pub fn apply(&self, records: &[(u64, replica::KvRecord)], upto: u64) -> Result<(), String> {
        let Some(r) = self.replica.get() else {
            return Err("KV replication is off".into());
        };
        let last = upto;
        // One transaction per namespace and run of records between namespace
        // drops; the order within each namespace is the log's, and
        // namespaces are independent.
        let mut by_ns: Vec<(&str, Vec<store::Applied<'_>>)> = Vec::new();
        for (seq, rec) in records {
            let ns = rec.header.ns.as_str();
            if rec.header.drop {
                self.apply_runs(&mut by_ns)?;
                self.drop_namespace(ns);
                continue;
            }
            let item = (*seq, rec.header.key.as_str(), rec.entry());
            match by_ns.iter_mut().find(|(n, _)| *n == ns) {
                Some((_, items)) => items.push(item),
                None => by_ns.push((ns, vec![item])),
            }
        }
        self.apply_runs(&mut by_ns)?;
        replica::write_applied(&r.path, last)?;
        r.applied.send_replace(last);
        Ok(())
    }

    fn apply_runs(&self, by_ns: &mut Vec<(&str, Vec<store::Applied<'_>>)>) -> Result<(), String> {
        for (ns, items) in by_ns.drain(..) {
            let store = self.store(ns).map_err(|e| e.to_string())?;
            store.apply(&items).map_err(|e| e.to_string())?;
            for (_, key, _) in &items {
                self.cache.remove(ns, key);
            }
        }
        Ok(())
    }

    /// Removes a namespace with its data (its account was removed): on
    /// every PoP through the log in cluster mode, in log order with the
    /// other writes (a write made before it is gone everywhere, one made
    /// after it — by a new owner of the name — is kept); here only
    /// otherwise.
    pub fn remove_namespace(&self, ns: &str) -> KvFuture<()> {
        let Some(r) = self.replica.get() else {
            self.drop_namespace(ns);
            return Box::pin(std::future::ready(Ok(())));
        };
        if !valid_namespace(ns) {
            return Box::pin(std::future::ready(Ok(())));
        }
        let record = replica::KvRecord {
            header: replica::Header {
                ns: ns.to_owned(),
                key: String::new(),
                put: false,
                metadata: None,
                expiration: None,
                at_ms: now_ms(),
                blob: None,
                drop: true,
            },
            value: Bytes::new(),
        };
        let append = r.log.append(ns, record.encode(), None);
        let mut applied = r.applied.subscribe();
        Box::pin(async move {
            let seq = append.await.map_err(|e| {
                KvError::Unavailable(format!(
                    "KV namespace removal failed: 503 storage unavailable: {e}"
                ))
            })?;
            // Claims are released after this: the data must be gone here.
            if tokio::time::timeout(APPLY_WAIT, applied.wait_for(|a| *a >= seq))
                .await
                .is_err()
            {
                return Err(KvError::Unavailable(
                    "KV namespace removal failed: 503 this PoP has not applied it yet; retry"
                        .into(),
                ));
            }
            Ok(())
        })
    }

    /// Writes every live key of every namespace to a snapshot file as of
    /// the sequence applied now (the caller applies nothing meanwhile).
    /// Returns that sequence and the number of keys. Blocking.
    pub fn write_snapshot(&self, path: &std::path::Path) -> Result<(u64, u64), String> {
        let seq = self.applied();
        let mut w = replica::SnapshotWriter::create(path, seq)?;
        for ns in self.namespaces_on_disk() {
            let store = self.store(&ns).map_err(|e| e.to_string())?;
            store
                .for_each(now_unix(), |key, value| {
                    w.add(&replica::KvRecord {
                        header: replica::Header {
                            ns: ns.clone(),
                            key,
                            put: true,
                            metadata: value.metadata,
                            expiration: value.expiration,
                            at_ms: 0,
                            blob: None,
                            drop: false,
                        },
                        value: value.value,
                    })
                })
                .map_err(|e| e.to_string())?;
        }
        let keys = w.keys;
        w.finish()?;
        Ok((seq, keys))
    }

    /// Replaces every namespace here with a snapshot's content and records
    /// its sequence as applied. Blocking.
    pub fn load_snapshot(&self, path: &std::path::Path) -> Result<u64, String> {
        let Some(r) = self.replica.get() else {
            return Err("KV replication is off".into());
        };
        // Read through once before anything is replaced: a damaged or cut
        // snapshot must not leave this PoP with emptied namespaces.
        for rec in replica::SnapshotReader::open(path)? {
            rec?;
        }
        let reader = replica::SnapshotReader::open(path)?;
        let seq = reader.seq;
        for ns in self.namespaces_on_disk() {
            self.store(&ns)
                .and_then(|s| s.clear().map_err(unavailable))
                .map_err(|e| e.to_string())?;
            self.cache.evict_namespace(&ns);
        }
        let mut batch: Vec<(u64, replica::KvRecord)> = Vec::new();
        let flush = |batch: &mut Vec<(u64, replica::KvRecord)>| -> Result<(), String> {
            let Some((_, first)) = batch.first() else {
                return Ok(());
            };
            let store = self.store(&first.header.ns).map_err(|e| e.to_string())?;
            let items: Vec<_> = batch
                .iter()
                .map(|(s, rec)| (*s, rec.header.key.as_str(), rec.entry()))
                .collect();
            store.apply(&items).map_err(|e| e.to_string())?;
            self.cache.evict_namespace(&first.header.ns);
            batch.clear();
            Ok(())
        };
        let mut bytes = 0usize;
        for rec in reader {
            let rec = rec?;
            if batch.len() >= 512
                || bytes >= 16 << 20
                || batch
                    .first()
                    .is_some_and(|(_, f)| f.header.ns != rec.header.ns)
            {
                flush(&mut batch)?;
                bytes = 0;
            }
            bytes += rec.value.len();
            batch.push((seq, rec));
        }
        flush(&mut batch)?;
        replica::write_applied(&r.path, seq)?;
        r.applied.send_replace(seq);
        Ok(seq)
    }

    /// The namespaces that have a database here.
    fn namespaces_on_disk(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("kv")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".db")?.to_owned();
                valid_namespace(&name).then_some(name)
            })
            .collect();
        names.sort();
        names
    }

    /// A write in cluster mode: appended to the log; resolves once the
    /// engine acknowledged it and this node applied it.
    fn through_log(
        &self,
        op: &'static str,
        ns: String,
        key: String,
        entry: Option<KvValue>,
    ) -> KvFuture<()> {
        let Some(r) = self.replica.get() else {
            return Box::pin(std::future::ready(Err(KvError::Unavailable(
                "KV replication is off".into(),
            ))));
        };
        let put = entry.is_some();
        let (metadata, expiration, value) = match entry {
            Some(e) => (e.metadata, e.expiration, e.value),
            None => (None, None, Bytes::new()),
        };
        let (inline, blob) = if value.len() > replica::INLINE_VALUE_BYTES {
            let name = uuid::Uuid::new_v4().simple().to_string();
            (Bytes::new(), Some((name, value)))
        } else {
            (value, None)
        };
        let blob_name = blob.as_ref().map(|(n, _)| n.clone());
        let record = replica::KvRecord {
            header: replica::Header {
                ns: ns.clone(),
                key,
                put,
                metadata,
                expiration,
                at_ms: now_ms(),
                blob: blob_name,
                drop: false,
            },
            value: inline,
        };
        let append = r.log.append(&ns, record.encode(), blob);
        let mut applied = r.applied.subscribe();
        Box::pin(async move {
            let seq = append.await.map_err(|e| {
                KvError::Unavailable(format!("KV {op} failed: 503 storage unavailable: {e}"))
            })?;
            if tokio::time::timeout(APPLY_WAIT, applied.wait_for(|a| *a >= seq))
                .await
                .is_err()
            {
                tracing::warn!(namespace = %ns, seq, "a KV write was acknowledged but is not applied here yet");
            }
            Ok(())
        })
    }

    fn store(&self, namespace: &str) -> Result<Arc<KvStore>, KvError> {
        if !valid_namespace(namespace) {
            return Err(KvError::Invalid(format!(
                "invalid KV namespace name '{namespace}': use 1-64 of A-Z, a-z, 0-9, '_' and '-'"
            )));
        }
        let mut stores = self.stores.lock();
        if let Some(s) = stores.get(namespace) {
            return Ok(s.clone());
        }
        let path = super::names::kv_db(&self.dir, namespace)
            .map_err(|e| KvError::Invalid(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let store = Arc::new(KvStore::open(&path).map_err(unavailable)?);
        stores.insert(namespace.to_owned(), store.clone());
        Ok(store)
    }

    /// Checks every namespace database under `<data_dir>/kv` (at start): a
    /// damaged one stops the node with its name, rather than being served as
    /// an empty namespace.
    pub fn check_all(data_dir: &std::path::Path) -> Result<(), crate::state::StateError> {
        let Ok(entries) = std::fs::read_dir(data_dir.join("kv")) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "db") {
                crate::state::durable::check_database(&path, &["kv"]).map_err(|why| {
                    crate::state::StateError::Damaged(format!(
                        "the KV namespace database {} is damaged: {why}",
                        path.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Forgets a namespace and removes its database (its account was removed).
    pub fn drop_namespace(&self, namespace: &str) {
        let Ok(path) = super::names::kv_db(&self.dir, namespace) else {
            return;
        };
        self.stores.lock().remove(namespace);
        self.cache.evict_namespace(namespace);
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(namespace, error = %e, "cannot remove a KV namespace file");
                }
            }
        }
    }

    /// Removes expired keys from every open namespace and refreshes the
    /// bytes-stored gauge. Blocking.
    pub fn purge_expired(&self) {
        let stores: Vec<(String, Arc<KvStore>)> = self
            .stores
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = now_unix();
        for (name, store) in stores {
            if let Err(e) = store.purge_expired(now) {
                tracing::warn!(namespace = %name, error = %e, "KV purge failed");
            }
            if let Err(e) = store.compact() {
                tracing::warn!(namespace = %name, error = %e, "KV compaction failed");
            }
            if let Ok(bytes) = store.bytes_stored() {
                metrics::gauge!(BYTES_STORED, "namespace" => name).set(bytes as f64);
            }
        }
    }

    /// Purges expired keys every `every`, on a thread of its own, for the life of
    /// the process (or until the service is dropped).
    pub fn spawn_purger(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("edged-kv-purge".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                match weak.upgrade() {
                    Some(kv) => kv.purge_expired(),
                    None => return,
                }
            });
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KvError> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f).await.map_err(unavailable)?
}

impl KvBackend for KvService {
    fn get(&self, namespace: &str, key: &str, cache_ttl: Option<u64>) -> KvFuture<Option<KvValue>> {
        let ns = namespace.to_owned();
        let key = key.to_owned();
        let store = check_key("GET", &key).and_then(|_| self.store(&ns));
        let cache = self.cache.clone();
        let ttl = cache_ttl
            .map(Duration::from_secs)
            .unwrap_or(self.default_ttl);
        metrics::counter!(OPS, "namespace" => ns.clone(), "op" => "get").increment(1);
        if store.is_ok() {
            if let Cached::Known(v) = cache.get(&ns, &key, now_unix()) {
                metrics::counter!(CACHE_HITS, "namespace" => ns).increment(1);
                return Box::pin(std::future::ready(Ok(v)));
            }
            metrics::counter!(CACHE_MISSES, "namespace" => ns.clone()).increment(1);
        }
        let generation = cache.generation(&ns, &key);
        Box::pin(async move {
            let store = store?;
            let k = key.clone();
            let value = blocking(move || store.get(&k, now_unix()).map_err(unavailable)).await?;
            cache.insert_read(&ns, &key, value.clone(), ttl, generation);
            Ok(value)
        })
    }

    fn put(&self, namespace: &str, key: &str, value: Bytes, options: KvPutOptions) -> KvFuture<()> {
        let ns = namespace.to_owned();
        let key = key.to_owned();
        let now = now_unix();
        let checked = check_put(&key, value.len(), &options)
            .and_then(|_| expiration(&options, now))
            .and_then(|expiration| Ok((self.store(&ns)?, expiration)));
        let cache = self.cache.clone();
        let ttl = self.default_ttl;
        metrics::counter!(OPS, "namespace" => ns.clone(), "op" => "put").increment(1);
        if self.replica.get().is_some() {
            return match checked {
                Ok((_, expiration)) => {
                    let entry = KvValue {
                        value,
                        metadata: options.metadata,
                        expiration,
                    };
                    self.through_log("PUT", ns, key, Some(entry))
                }
                Err(e) => Box::pin(std::future::ready(Err(e))),
            };
        }
        Box::pin(async move {
            let (store, expiration) = checked?;
            let entry = KvValue {
                value,
                metadata: options.metadata,
                expiration,
            };
            let (k, e) = (key.clone(), entry.clone());
            blocking(move || store.put(&k, &e).map_err(unavailable)).await?;
            cache.insert(&ns, &key, Some(entry), ttl);
            Ok(())
        })
    }

    fn delete(&self, namespace: &str, key: &str) -> KvFuture<()> {
        let ns = namespace.to_owned();
        let key = key.to_owned();
        let store = check_key("DELETE", &key).and_then(|_| self.store(&ns));
        let cache = self.cache.clone();
        let ttl = self.default_ttl;
        metrics::counter!(OPS, "namespace" => ns.clone(), "op" => "delete").increment(1);
        if self.replica.get().is_some() {
            return match store {
                Ok(_) => self.through_log("DELETE", ns, key, None),
                Err(e) => Box::pin(std::future::ready(Err(e))),
            };
        }
        Box::pin(async move {
            let store = store?;
            let k = key.clone();
            blocking(move || store.delete(&k).map_err(unavailable)).await?;
            cache.insert(&ns, &key, None, ttl);
            Ok(())
        })
    }

    fn list(&self, namespace: &str, options: KvListOptions) -> KvFuture<KvListResult> {
        let ns = namespace.to_owned();
        let checked = (|| {
            let limit = match options.limit {
                None => MAX_LIST_LIMIT,
                Some(l) if l.is_finite() && l >= 1.0 && l <= MAX_LIST_LIMIT as f64 => l as usize,
                Some(l) => {
                    return Err(KvError::Invalid(format!(
                        "KV LIST failed: 400 Invalid key_count_limit of {l}. Please specify an integer between 1 and {MAX_LIST_LIMIT}."
                    )))
                }
            };
            let after = match &options.cursor {
                None => None,
                Some(c) if c.is_empty() => None,
                Some(c) => Some(hex::decode(c).map_err(|_| {
                    KvError::Invalid(format!("KV LIST failed: 400 Invalid cursor '{c}'."))
                })?),
            };
            let prefix = options.prefix.clone().unwrap_or_default();
            if prefix.len() > MAX_KEY_BYTES {
                return Err(KvError::Invalid(format!(
                    "KV LIST failed: 414 UTF-8 encoded length of {} exceeds key length limit of {MAX_KEY_BYTES}.",
                    prefix.len()
                )));
            }
            Ok((self.store(&ns)?, limit, after, prefix))
        })();
        metrics::counter!(OPS, "namespace" => ns, "op" => "list").increment(1);
        Box::pin(async move {
            let (store, limit, after, prefix) = checked?;
            let (keys, more) = blocking(move || {
                store
                    .list(&prefix, after.as_deref(), limit, now_unix())
                    .map_err(unavailable)
            })
            .await?;
            let cursor = more
                .then(|| keys.last().map(|k| hex::encode(k.name.as_bytes())))
                .flatten();
            Ok(KvListResult {
                keys: keys
                    .into_iter()
                    .map(|k| KvListKey {
                        name: k.name,
                        expiration: k.expiration,
                        metadata: k.metadata.and_then(|m| serde_json::from_str(&m).ok()),
                    })
                    .collect(),
                list_complete: !more,
                cursor,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(check_key("GET", "").is_err());
        assert!(check_key("GET", "..").is_err());
        assert!(check_key("GET", &"k".repeat(512)).is_ok());
        let e = check_key("PUT", &"k".repeat(513)).unwrap_err();
        assert!(
            e.to_string()
                .contains("513 exceeds key length limit of 512"),
            "{e}"
        );
        let ttl = |t: f64| KvPutOptions {
            expiration_ttl: Some(t),
            ..Default::default()
        };
        assert_eq!(expiration(&ttl(60.0), 1000).unwrap(), Some(1060));
        assert!(expiration(&ttl(59.0), 1000).is_err());
        let at = |t: f64| KvPutOptions {
            expiration: Some(t),
            ..Default::default()
        };
        assert!(expiration(&at(1059.0), 1000).is_err());
        assert_eq!(expiration(&at(1060.0), 1000).unwrap(), Some(1060));
        assert!(valid_namespace("cache_1-a"));
        assert!(!valid_namespace("../etc"));
    }
}
