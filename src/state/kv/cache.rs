//! The node's KV edge cache: recent reads (and known-missing keys) of every
//! namespace, bounded by bytes, least recently used out first, each entry fresh
//! for its `cacheTtl`.
//!
//! Writes on this node update the cache as they commit, so a node reads its own
//! writes; entries filled from elsewhere (other nodes, once namespaces replicate)
//! may be stale for up to their TTL — the Workers KV consistency model.

use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::js::KvValue;

const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    value: Option<KvValue>,
    fresh_until: Instant,
    size: usize,
}

pub struct EdgeCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    lru: LruCache<(String, String), Entry>,
    bytes: usize,
    /// Removals counted per slot of (namespace, key) hashes: a read that
    /// started before a removal of its key must not cache what it read (the
    /// removal may be for a newer write). Slots, not one counter, so one
    /// tenant's writes do not stop everyone's reads from caching.
    removals: Vec<u64>,
}

const REMOVAL_SLOTS: usize = 1024;

fn slot(namespace: &str, key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (namespace, key).hash(&mut h);
    (h.finish() as usize) % REMOVAL_SLOTS
}

/// The longest an entry stays fresh (a `cacheTtl` beyond it is clamped, and
/// `Instant` arithmetic never overflows).
const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

/// What the cache knows about a key.
#[derive(Debug, PartialEq)]
pub enum Cached {
    /// Not cached (or stale): ask the origin.
    Unknown,
    /// Cached: the value, or `None` for a key known to be absent.
    Known(Option<KvValue>),
}

impl EdgeCache {
    pub fn new(capacity_bytes: usize) -> Self {
        EdgeCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                removals: vec![0; REMOVAL_SLOTS],
            }),
            capacity: capacity_bytes,
        }
    }

    pub fn get(&self, namespace: &str, key: &str, now_unix: u64) -> Cached {
        let mut inner = self.inner.lock();
        let k = (namespace.to_owned(), key.to_owned());
        let Some(entry) = inner.lru.get(&k) else {
            return Cached::Unknown;
        };
        if entry.fresh_until <= Instant::now() {
            if let Some(old) = inner.lru.pop(&k) {
                inner.bytes -= old.size;
            }
            return Cached::Unknown;
        }
        match &entry.value {
            Some(v) if v.expiration.is_some_and(|e| e <= now_unix) => Cached::Known(None),
            other => Cached::Known(other.clone()),
        }
    }

    /// The count of removals so far of `key`'s slot (see
    /// [`EdgeCache::insert_read`]).
    pub fn generation(&self, namespace: &str, key: &str) -> u64 {
        self.inner.lock().removals[slot(namespace, key)]
    }

    /// Caches what a read from the origin returned, unless the key (or one
    /// sharing its slot) was removed since the read began (at `generation`):
    /// a replicated write applied meanwhile would otherwise be hidden behind
    /// the older value. Checked and inserted under one lock.
    pub fn insert_read(
        &self,
        namespace: &str,
        key: &str,
        value: Option<KvValue>,
        ttl: Duration,
        generation: u64,
    ) {
        self.put(namespace, key, value, ttl, Some(generation));
    }

    /// Caches what the origin said (or what was just written) for `ttl`.
    pub fn insert(&self, namespace: &str, key: &str, value: Option<KvValue>, ttl: Duration) {
        self.put(namespace, key, value, ttl, None);
    }

    fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Option<KvValue>,
        ttl: Duration,
        generation: Option<u64>,
    ) {
        let size = ENTRY_OVERHEAD
            + namespace.len()
            + key.len()
            + value
                .as_ref()
                .map(|v| v.value.len() + v.metadata.as_ref().map_or(0, String::len))
                .unwrap_or(0);
        if size > self.capacity / 4 {
            // Too big to be worth the room: drop any stale copy instead.
            self.remove(namespace, key);
            return;
        }
        let mut inner = self.inner.lock();
        if generation.is_some_and(|g| inner.removals[slot(namespace, key)] != g) {
            return;
        }
        let entry = Entry {
            value,
            fresh_until: Instant::now() + ttl.min(MAX_TTL),
            size,
        };
        if let Some(old) = inner.lru.put((namespace.to_owned(), key.to_owned()), entry) {
            inner.bytes -= old.size;
        }
        inner.bytes += size;
        while inner.bytes > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.size,
                None => break,
            }
        }
    }

    pub fn remove(&self, namespace: &str, key: &str) {
        let mut inner = self.inner.lock();
        inner.removals[slot(namespace, key)] += 1;
        if let Some(old) = inner.lru.pop(&(namespace.to_owned(), key.to_owned())) {
            inner.bytes -= old.size;
        }
    }

    /// Forgets every cached key of `namespace`.
    pub fn evict_namespace(&self, namespace: &str) {
        let mut inner = self.inner.lock();
        // Any key of the namespace may be in any slot.
        for r in inner.removals.iter_mut() {
            *r += 1;
        }
        let keys: Vec<(String, String)> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.0 == namespace)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(old) = inner.lru.pop(&k) {
                inner.bytes -= old.size;
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<KvValue> {
        Some(KvValue {
            value: s.as_bytes().to_vec().into(),
            metadata: None,
            expiration: None,
        })
    }

    #[test]
    fn a_read_that_raced_a_removal_is_not_cached_and_huge_ttls_are_clamped() {
        let c = EdgeCache::new(1 << 20);
        let g = c.generation("ns", "k");
        c.remove("ns", "k");
        c.insert_read("ns", "k", v("old"), Duration::from_secs(60), g);
        assert_eq!(c.get("ns", "k", 0), Cached::Unknown);
        let g = c.generation("ns", "k");
        c.insert_read("ns", "k", v("new"), Duration::from_secs(u64::MAX), g);
        assert_eq!(c.get("ns", "k", 0), Cached::Known(v("new")));
    }

    #[test]
    fn hits_misses_ttl_and_eviction() {
        let c = EdgeCache::new(4096);
        assert_eq!(c.get("n", "a", 0), Cached::Unknown);
        c.insert("n", "a", v("1"), Duration::from_secs(60));
        assert_eq!(c.get("n", "a", 0), Cached::Known(v("1")));
        assert_eq!(
            c.get("other", "a", 0),
            Cached::Unknown,
            "namespaces are separate"
        );
        c.insert("n", "gone", None, Duration::from_secs(60));
        assert_eq!(c.get("n", "gone", 0), Cached::Known(None));
        c.insert("n", "short", v("x"), Duration::from_millis(0));
        assert_eq!(c.get("n", "short", 0), Cached::Unknown);
        for i in 0..100 {
            c.insert(
                "n",
                &format!("k{i}"),
                v(&"x".repeat(200)),
                Duration::from_secs(60),
            );
        }
        assert!(c.bytes() <= 4096);
        assert_eq!(
            c.get("n", "a", 0),
            Cached::Unknown,
            "least recently used went first"
        );
    }
}
