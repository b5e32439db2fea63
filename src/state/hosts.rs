//! Host patterns, the part of a route that names hosts, and which of them may
//! belong to different accounts.
//!
//! A route is `host/path` in Workers syntax. Its host part is one of: an exact
//! host (`api.example.com`), any subdomain at any depth (`*.example.com`), the
//! domain and its subdomains (`*example.com`), or any host (`*`). Hosts are
//! what accounts own: once an account has claimed a pattern, no other account
//! may claim a pattern that [`HostPattern::overlaps`] it — otherwise it could
//! take traffic for the first account's hosts with a more specific route, or
//! catch the paths the first account does not route.

/// The host part of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    Subdomains(String),
    SelfAndSubdomains(String),
    Any,
}

impl HostPattern {
    /// Splits a route (`[scheme://]host/path`) into its host pattern and path;
    /// the error says what is wrong.
    pub fn parse_route(raw: &str) -> Result<(HostPattern, &str), String> {
        let trimmed = raw.trim();
        let s = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let Some(slash) = s.find('/') else {
            return Err(format!("route '{raw}' has no path: write it as '{s}/*'"));
        };
        let (host, path) = s.split_at(slash);
        Ok((
            Self::parse(host).map_err(|m| format!("route '{raw}': {m}"))?,
            path,
        ))
    }

    /// Parses a host pattern on its own (`*.example.com`).
    pub fn parse(host: &str) -> Result<HostPattern, String> {
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err("no host".into());
        }
        if host.len() > 253 {
            return Err("the host is longer than 253 characters".into());
        }
        let bare = host.trim_start_matches('*').trim_start_matches('.');
        if bare.contains('*') {
            return Err("'*' may only start the host".into());
        }
        if !bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err("invalid character in host".into());
        }
        let pattern = if host == "*" {
            HostPattern::Any
        } else if let Some(rest) = host.strip_prefix("*.") {
            HostPattern::Subdomains(rest.to_owned())
        } else if let Some(rest) = host.strip_prefix('*') {
            HostPattern::SelfAndSubdomains(rest.to_owned())
        } else {
            HostPattern::Exact(host)
        };
        if let Some(d) = pattern.domain() {
            if d.is_empty() || d.split('.').any(|l| l.is_empty()) {
                return Err("invalid host".into());
            }
        }
        Ok(pattern)
    }

    /// The domain the pattern is about (`None` for any host).
    pub fn domain(&self) -> Option<&str> {
        match self {
            HostPattern::Exact(d)
            | HostPattern::Subdomains(d)
            | HostPattern::SelfAndSubdomains(d) => Some(d),
            HostPattern::Any => None,
        }
    }

    /// The pattern as written (`*.example.com`); parsing it gives it back.
    pub fn canonical(&self) -> String {
        match self {
            HostPattern::Exact(d) => d.clone(),
            HostPattern::Subdomains(d) => format!("*.{d}"),
            HostPattern::SelfAndSubdomains(d) => format!("*{d}"),
            HostPattern::Any => "*".into(),
        }
    }

    /// Whether some host matches both patterns.
    pub fn overlaps(&self, other: &HostPattern) -> bool {
        use HostPattern::*;
        fn under(host: &str, domain: &str) -> bool {
            host.len() > domain.len()
                && host.ends_with(domain)
                && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        }
        fn related(a: &str, b: &str) -> bool {
            a == b || under(a, b) || under(b, a)
        }
        match (self, other) {
            (Any, _) | (_, Any) => true,
            (Exact(a), Exact(b)) => a == b,
            (Exact(h), Subdomains(d)) | (Subdomains(d), Exact(h)) => under(h, d),
            (Exact(h), SelfAndSubdomains(d)) | (SelfAndSubdomains(d), Exact(h)) => {
                h == d || under(h, d)
            }
            (Subdomains(a) | SelfAndSubdomains(a), Subdomains(b) | SelfAndSubdomains(b)) => {
                related(a, b)
            }
        }
    }
}

/// `overlaps` on canonical strings (what the account store keeps); a string
/// that does not parse overlaps nothing.
pub fn canonical_overlap(a: &str, b: &str) -> bool {
    match (HostPattern::parse(a), HostPattern::parse(b)) {
        (Ok(a), Ok(b)) => a.overlaps(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn overlapping_patterns() {
        assert!(p("shop.example").overlaps(&p("shop.example")));
        assert!(!p("shop.example").overlaps(&p("shop.example.com")));
        assert!(p("*.example.com").overlaps(&p("api.example.com")));
        assert!(!p("*.example.com").overlaps(&p("example.com")));
        assert!(p("*example.com").overlaps(&p("example.com")));
        assert!(!p("*example.com").overlaps(&p("badexample.com")));
        assert!(p("*.a.example.com").overlaps(&p("*example.com")));
        assert!(!p("*.example.org").overlaps(&p("*.example.com")));
        assert!(p("*").overlaps(&p("x.y")));
        for s in ["*", "*.a.b", "*a.b", "a.b"] {
            assert_eq!(p(&p(s).canonical()), p(s));
        }
        assert!(HostPattern::parse("a..b").is_err());
        assert!(HostPattern::parse("a*b").is_err());
        assert!(HostPattern::parse_route("a.b").is_err());
    }
}
