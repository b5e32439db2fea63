//! Route matching with Workers route syntax.
//!
//! A route is `host/path`, optionally with a scheme (ignored):
//! - host: `api.example.com` (exact), `*.example.com` (any subdomain, at any
//!   depth), `*example.com` (the domain itself and its subdomains), or `*` (any);
//! - path: `/exact` or a prefix ending in `*` (`/api/*`, `/*`).
//!
//! The most specific matching route wins: an exact host over a wildcard, a longer
//! host suffix over a shorter one, then an exact path over a prefix, then a longer
//! path prefix over a shorter one.
//!
//! Lookup goes cache → trie → config: a bounded cache of `(host, path)` answers in
//! front of a trie over the reversed host labels, built from the published
//! deployments (the config) and rebuilt when they change.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

pub use crate::state::hosts::HostPattern;

const CACHE_CAPACITY: usize = 10_000;

/// `(host, path)` of a lookup.
type RouteKey = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Exact(String),
    Prefix(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    pub host: HostPattern,
    path: PathPattern,
}

impl RoutePattern {
    /// Parses `host/path`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<RoutePattern, String> {
        let (host, path) = HostPattern::parse_route(raw)?;
        let star = path.find('*');
        let path = match star {
            None => PathPattern::Exact(path.to_owned()),
            Some(i) if i == path.len() - 1 => PathPattern::Prefix(path[..i].to_owned()),
            Some(_) => return Err(format!("route '{raw}': '*' may only end the path")),
        };
        Ok(RoutePattern { host, path })
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    /// Larger is more specific.
    fn specificity(&self) -> (u8, usize, u8, usize) {
        let (host_rank, host_len) = match &self.host {
            HostPattern::Exact(h) => (3, h.len()),
            HostPattern::Subdomains(h) => (2, h.len() + 1),
            HostPattern::SelfAndSubdomains(h) => (2, h.len()),
            HostPattern::Any => (0, 0),
        };
        let (path_rank, path_len) = match &self.path {
            PathPattern::Exact(p) => (1, p.len()),
            PathPattern::Prefix(p) => (0, p.len()),
        };
        (host_rank, host_len, path_rank, path_len)
    }
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    exact: Vec<usize>,
    subdomains: Vec<usize>,
    self_and_subdomains: Vec<usize>,
}

/// Every route of every live worker, ready for lookups.
pub struct RouteTable {
    routes: Vec<(RoutePattern, Arc<str>)>,
    root: Node,
    any_host: Vec<usize>,
    cache: Mutex<HashMap<RouteKey, Option<Arc<str>>>>,
}

impl RouteTable {
    /// Builds the table from `(pattern, worker)` pairs; unparsable patterns (which
    /// the control plane never stores) are skipped.
    pub fn build<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> RouteTable {
        let mut table = RouteTable {
            routes: Vec::new(),
            root: Node::default(),
            any_host: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        };
        for (raw, worker) in entries {
            let Ok(pattern) = RoutePattern::parse(raw) else {
                continue;
            };
            let idx = table.routes.len();
            let (labels, list): (&str, fn(&mut Node) -> &mut Vec<usize>) = match &pattern.host {
                HostPattern::Any => {
                    table.any_host.push(idx);
                    table.routes.push((pattern, worker.into()));
                    continue;
                }
                HostPattern::Exact(h) => (h.as_str(), |n| &mut n.exact),
                HostPattern::Subdomains(h) => (h.as_str(), |n| &mut n.subdomains),
                HostPattern::SelfAndSubdomains(h) => (h.as_str(), |n| &mut n.self_and_subdomains),
            };
            let mut node = &mut table.root;
            for label in labels.rsplit('.') {
                node = node.children.entry(label.to_owned()).or_default();
            }
            list(node).push(idx);
            table.routes.push((pattern, worker.into()));
        }
        table
    }

    /// The worker serving `host` (without port, any case) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<Arc<str>> {
        let host = host.to_ascii_lowercase();
        let key = (host, path.to_owned());
        if let Some(hit) = self.cache.lock().get(&key) {
            return hit.clone();
        }
        let found = self.lookup_trie(&key.0, path);
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, found.clone());
        found
    }

    fn lookup_trie(&self, host: &str, path: &str) -> Option<Arc<str>> {
        let labels: Vec<&str> = host.rsplit('.').collect();
        let mut candidates: Vec<usize> = self.any_host.clone();
        let mut node = &self.root;
        for (depth, label) in labels.iter().enumerate() {
            match node.children.get(*label) {
                Some(child) => node = child,
                None => break,
            }
            let consumed = depth + 1;
            candidates.extend(&node.self_and_subdomains);
            if consumed == labels.len() {
                candidates.extend(&node.exact);
            } else {
                candidates.extend(&node.subdomains);
            }
        }
        candidates
            .into_iter()
            .map(|i| &self.routes[i])
            .filter(|(p, _)| p.path_matches(path))
            .max_by_key(|(p, _)| p.specificity())
            .map(|(_, w)| w.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> RouteTable {
        RouteTable::build(entries.iter().copied())
    }

    #[test]
    fn parse_rejects_bad_patterns() {
        assert!(RoutePattern::parse("example.com").is_err());
        assert!(RoutePattern::parse("exa*mple.com/*").is_err());
        assert!(RoutePattern::parse("example.com/a*b").is_err());
        assert!(RoutePattern::parse("/*").is_err());
        assert!(RoutePattern::parse("https://example.com/*").is_ok());
    }

    #[test]
    fn most_specific_wins() {
        let t = table(&[
            ("*/*", "catchall"),
            ("*.example.com/*", "wild"),
            ("api.example.com/*", "api"),
            ("api.example.com/v2/*", "v2"),
            ("api.example.com/v2/health", "health"),
            ("*example.org/*", "org"),
        ]);
        assert_eq!(t.lookup("api.example.com", "/x").as_deref(), Some("api"));
        assert_eq!(t.lookup("API.example.com", "/v2/x").as_deref(), Some("v2"));
        assert_eq!(
            t.lookup("api.example.com", "/v2/health").as_deref(),
            Some("health")
        );
        assert_eq!(t.lookup("a.b.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(t.lookup("example.com", "/").as_deref(), Some("catchall"));
        assert_eq!(t.lookup("example.org", "/").as_deref(), Some("org"));
        assert_eq!(t.lookup("x.example.org", "/").as_deref(), Some("org"));
        assert_eq!(t.lookup("other.net", "/").as_deref(), Some("catchall"));
    }

    #[test]
    fn no_match_is_none_and_cached() {
        let t = table(&[("api.example.com/api/*", "api")]);
        assert_eq!(t.lookup("api.example.com", "/other"), None);
        assert_eq!(t.lookup("api.example.com", "/other"), None);
        assert_eq!(t.lookup("example.com", "/api/x"), None);
        assert_eq!(
            t.lookup("api.example.com", "/api/x").as_deref(),
            Some("api")
        );
    }
}
