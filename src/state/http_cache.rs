//! The node's Cache API store (`caches.default`, `caches.open(name)`): responses
//! in memory, bounded by bytes, least recently used out first, each fresh for
//! the time its headers give.
//!
//! Freshness follows Cloudflare's rules for the Cache API: `Cache-Control:
//! s-maxage` wins over `max-age`, which wins over `Expires`; without any of them
//! the edge TTL by status applies (200/206/301: 2 h, 302/303: 20 min, 404/410:
//! 3 min, anything else is not stored). `no-store`, `no-cache`, `private` and a
//! `Set-Cookie` header keep a response out (`private=Set-Cookie` stores it without
//! the cookie). `Vary` is ignored except for `Accept-Encoding`. What JS must refuse
//! with a TypeError (non-GET requests, 206, `Vary: *`) is checked in
//! `runtime/40_cache.js` before a put reaches this store.
//!
//! Per node and in memory: a restart empties it, as an edge cache may.

use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use crate::js::{CacheBackend, CachedResponse};

const ENTRY_OVERHEAD: usize = 128;
pub(crate) const CACHE_OPS: &str = "edged_cache_operations_total";
pub(crate) const CACHE_BYTES: &str = "edged_cache_bytes";

struct Entry {
    response: CachedResponse,
    /// The request's `Accept-Encoding` when the response varies on it.
    vary_encoding: Option<String>,
    fresh_until: Instant,
    size: usize,
}

type Key = (String, String, String);

pub struct HttpCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    lru: LruCache<Key, Entry>,
    bytes: usize,
}

impl HttpCache {
    pub fn new(capacity_bytes: usize) -> Self {
        HttpCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity: capacity_bytes,
        }
    }

    /// Bytes held (bodies, headers and a fixed overhead per entry).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    fn count(op: &'static str, result: &'static str) {
        metrics::counter!(CACHE_OPS, "op" => op, "result" => result).increment(1);
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How long a response may be served from the cache; `None`: do not store it.
/// May strip `Set-Cookie` (for `private=Set-Cookie`).
pub fn freshness(response: &mut CachedResponse, now: SystemTime) -> Option<Duration> {
    let cc = header(&response.headers, "cache-control")
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut max_age = None;
    let mut s_maxage = None;
    let mut cookie_private = false;
    for directive in cc.split(',').map(str::trim) {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        match (name, value) {
            ("no-store" | "no-cache", _) => return None,
            ("private", None) => return None,
            ("private", Some(fields)) => {
                if fields.split(',').any(|f| f.trim() == "set-cookie") {
                    cookie_private = true;
                } else {
                    return None;
                }
            }
            ("max-age", Some(v)) => max_age = v.parse::<u64>().ok(),
            ("s-maxage", Some(v)) => s_maxage = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    if header(&response.headers, "set-cookie").is_some() {
        if !cookie_private {
            return None;
        }
        response
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("set-cookie"));
    }
    let ttl = if let Some(s) = s_maxage.or(max_age) {
        Duration::from_secs(s)
    } else if let Some(expires) = header(&response.headers, "expires") {
        let at = httpdate::parse_http_date(expires).ok()?;
        at.duration_since(now).ok()?
    } else {
        match response.status {
            200 | 206 | 301 => Duration::from_secs(7200),
            302 | 303 => Duration::from_secs(1200),
            404 | 410 => Duration::from_secs(180),
            _ => return None,
        }
    };
    (!ttl.is_zero()).then_some(ttl)
}

fn varies_on_encoding(headers: &[(String, String)]) -> bool {
    header(headers, "vary").is_some_and(|v| {
        v.split(',')
            .any(|f| f.trim().eq_ignore_ascii_case("accept-encoding"))
    })
}

impl CacheBackend for HttpCache {
    fn lookup(
        &self,
        worker: &str,
        cache: &str,
        url: &str,
        accept_encoding: &str,
    ) -> Option<CachedResponse> {
        let key = (worker.to_owned(), cache.to_owned(), url.to_owned());
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let (fresh, matches) = match inner.lru.get(&key) {
            None => {
                Self::count("match", "miss");
                return None;
            }
            Some(e) => (
                e.fresh_until > now,
                e.vary_encoding
                    .as_deref()
                    .is_none_or(|v| v == accept_encoding),
            ),
        };
        if !fresh {
            if let Some(e) = inner.lru.pop(&key) {
                inner.bytes -= e.size;
            }
            Self::count("match", "expired");
            return None;
        }
        if !matches {
            Self::count("match", "miss");
            return None;
        }
        Self::count("match", "hit");
        let entry = inner.lru.get(&key)?;
        let mut response = entry.response.clone();
        response
            .headers
            .push(("cf-cache-status".into(), "HIT".into()));
        Some(response)
    }

    fn store(
        &self,
        worker: &str,
        cache: &str,
        url: &str,
        accept_encoding: &str,
        mut response: CachedResponse,
    ) -> bool {
        let Some(ttl) = freshness(&mut response, SystemTime::now()) else {
            Self::count("put", "uncacheable");
            return false;
        };
        let size = ENTRY_OVERHEAD
            + url.len()
            + response.body.len()
            + response
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.capacity {
            Self::count("put", "too_large");
            return false;
        }
        let vary_encoding =
            varies_on_encoding(&response.headers).then(|| accept_encoding.to_owned());
        let key = (worker.to_owned(), cache.to_owned(), url.to_owned());
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.pop(&key) {
            inner.bytes -= old.size;
        }
        while inner.bytes + size > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, e)) => {
                    inner.bytes -= e.size;
                    Self::count("evict", "lru");
                }
                None => break,
            }
        }
        inner.bytes += size;
        inner.lru.put(
            key,
            Entry {
                response,
                vary_encoding,
                fresh_until: Instant::now() + ttl.min(Duration::from_secs(365 * 86_400)),
                size,
            },
        );
        metrics::gauge!(CACHE_BYTES).set(inner.bytes as f64);
        Self::count("put", "stored");
        true
    }

    fn remove(&self, worker: &str, cache: &str, url: &str) -> bool {
        let key = (worker.to_owned(), cache.to_owned(), url.to_owned());
        let mut inner = self.inner.lock();
        let removed = match inner.lru.pop(&key) {
            Some(e) => {
                inner.bytes -= e.size;
                e.fresh_until > Instant::now()
            }
            None => false,
        };
        metrics::gauge!(CACHE_BYTES).set(inner.bytes as f64);
        Self::count("delete", if removed { "deleted" } else { "missing" });
        removed
    }

    fn purge(&self, owner: &str) {
        let mut inner = self.inner.lock();
        let keys: Vec<Key> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.0 == owner)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(e) = inner.lru.pop(&k) {
                inner.bytes -= e.size;
            }
        }
        metrics::gauge!(CACHE_BYTES).set(inner.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> CachedResponse {
        CachedResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn freshness_follows_the_headers() {
        let now = SystemTime::now();
        let ttl = |status, h: &[(&str, &str)]| freshness(&mut response(status, h, ""), now);
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=60")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            ttl(200, &[("cache-control", "max-age=60, s-maxage=10")]),
            Some(Duration::from_secs(10))
        );
        assert_eq!(ttl(200, &[]), Some(Duration::from_secs(7200)));
        assert_eq!(ttl(404, &[]), Some(Duration::from_secs(180)));
        assert_eq!(ttl(500, &[]), None);
        assert_eq!(ttl(200, &[("cache-control", "no-store")]), None);
        assert_eq!(ttl(200, &[("cache-control", "private")]), None);
        assert_eq!(ttl(200, &[("cache-control", "max-age=0")]), None);
        assert_eq!(ttl(200, &[("set-cookie", "a=b")]), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let got = ttl(200, &[("expires", later.as_str())]).expect("fresh");
        assert!(got > Duration::from_secs(95) && got <= Duration::from_secs(100));
        let mut r = response(
            200,
            &[
                ("set-cookie", "a=b"),
                ("cache-control", "private=set-cookie, max-age=5"),
            ],
            "",
        );
        assert_eq!(freshness(&mut r, now), Some(Duration::from_secs(5)));
        assert!(r.headers.iter().all(|(k, _)| k != "set-cookie"));
    }

    #[test]
    fn lru_bounded_by_bytes_and_keyed_per_worker() {
        let cache = HttpCache::new(4 * (ENTRY_OVERHEAD + 1100));
        let body = "x".repeat(1000);
        for i in 0..10 {
            assert!(cache.store(
                "w",
                "",
                &format!("http://a/{i}"),
                "",
                response(200, &[], &body)
            ));
        }
        assert!(cache.bytes() <= 4 * (ENTRY_OVERHEAD + 1100));
        assert!(
            cache.lookup("w", "", "http://a/0", "").is_none(),
            "oldest evicted"
        );
        assert!(cache.lookup("w", "", "http://a/9", "").is_some());
        assert!(
            cache.lookup("other", "", "http://a/9", "").is_none(),
            "per worker"
        );
        assert!(
            cache.lookup("w", "named", "http://a/9", "").is_none(),
            "per cache name"
        );
        assert!(cache.remove("w", "", "http://a/9"));
        assert!(!cache.remove("w", "", "http://a/9"));
    }

    #[test]
    fn vary_accept_encoding_is_honoured() {
        let cache = HttpCache::new(1 << 20);
        let r = response(200, &[("vary", "Accept-Encoding, User-Agent")], "gz");
        assert!(cache.store("w", "", "http://a/", "gzip", r));
        assert!(cache.lookup("w", "", "http://a/", "gzip").is_some());
        assert!(cache.lookup("w", "", "http://a/", "br").is_none());
    }
}
