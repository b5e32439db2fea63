//! Where a worker's outbound `fetch()` may go.
//!
//! By default (`edged serve`) a worker reaches only public addresses: loopback,
//! private, link-local, shared (CGNAT), multicast and reserved ranges are refused,
//! so a tenant cannot reach the node's own control plane or the host's network.
//! `edged dev` allows everything; `[egress] allow` lists hosts or CIDR ranges that
//! stay reachable (the pass-through origin is added to it).
//!
//! Host names are resolved and every address they resolve to must pass. The
//! check runs in deno's fetch permission hook, once per request and per redirect
//! hop; a refusal surfaces in JS as a TypeError.
//!
//! Known gap: the HTTP client resolves the name again when it connects, so a DNS
//! server that answers differently within seconds (DNS rebinding) can slip past.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::time::{Duration, Instant};

use deno_core::url::{Host, Url};
use parking_lot::Mutex;

/// How long the verdict for a host name is reused.
const VERDICT_TTL: Duration = Duration::from_secs(30);
const VERDICT_CACHE: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
enum Allow {
    Host(String),
    Net(IpAddr, u8),
    /// One host and port (the pass-through origin), not its whole address.
    Endpoint(String, u16),
}

/// A host's verdict and when it was reached.
type Verdict = (Instant, Result<(), String>);

/// The node's egress policy.
#[derive(Debug)]
pub struct EgressPolicy {
    allow_private: bool,
    allow: Vec<Allow>,
    verdicts: Mutex<HashMap<(String, u16), Verdict>>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy::strict(&[]).unwrap_or_else(|_| EgressPolicy::permissive())
    }
}

impl EgressPolicy {
    /// Everything reachable (`edged dev`).
    pub fn permissive() -> Self {
        EgressPolicy {
            allow_private: true,
            allow: Vec::new(),
            verdicts: Mutex::default(),
        }
    }

    /// Public addresses only, plus `allow`: host names (`origin.internal`), IP
    /// addresses or CIDR ranges (`10.1.0.0/16`).
    pub fn strict(allow: &[String]) -> Result<Self, String> {
        Self::strict_with_endpoints(allow, &[])
    }

    /// As [`strict`](Self::strict), plus exact `(host, port)` endpoints.
    pub fn strict_with_endpoints(
        allow: &[String],
        endpoints: &[(String, u16)],
    ) -> Result<Self, String> {
        let mut allow = allow
            .iter()
            .map(|a| parse_allow(a))
            .collect::<Result<Vec<_>, _>>()?;
        allow.extend(
            endpoints
                .iter()
                .map(|(h, p)| Allow::Endpoint(h.trim_matches(['[', ']']).to_ascii_lowercase(), *p)),
        );
        Ok(EgressPolicy {
            allow_private: false,
            allow,
            verdicts: Mutex::default(),
        })
    }

    /// Checks `url`; the error is the message the worker sees.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "Fetch API cannot load {url}: scheme '{}' is not supported",
                url.scheme()
            ));
        }
        if self.allow_private {
            return Ok(());
        }
        let refused = |what: &str, why: &str| {
            Err(format!(
                "fetch to {what} refused by the node's egress policy ({why} addresses are not reachable from workers)"
            ))
        };
        let port = url.port_or_known_default().unwrap_or(80);
        if let Some(host) = url.host_str() {
            let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
            if self.allow.contains(&Allow::Endpoint(host, port)) {
                return Ok(());
            }
        }
        match url.host() {
            None => Err(format!("Fetch API cannot load {url}: no host")),
            Some(Host::Ipv4(ip)) => match self.ip_refusal(IpAddr::V4(ip)) {
                Some(why) => refused(&ip.to_string(), why),
                None => Ok(()),
            },
            Some(Host::Ipv6(ip)) => match self.ip_refusal(IpAddr::V6(ip)) {
                Some(why) => refused(&ip.to_string(), why),
                None => Ok(()),
            },
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if self.allow.contains(&Allow::Host(name.clone())) {
                    return Ok(());
                }
                if name == "localhost" || name.ends_with(".localhost") {
                    return refused(&name, "loopback");
                }
                let key = (name, port);
                if let Some((at, verdict)) = self.verdicts.lock().get(&key) {
                    if at.elapsed() < VERDICT_TTL {
                        return verdict.clone();
                    }
                }
                let verdict = self.resolve_and_check(&key.0, port);
                let mut cache = self.verdicts.lock();
                if cache.len() >= VERDICT_CACHE {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), verdict.clone()));
                verdict
            }
        }
    }

    fn resolve_and_check(&self, name: &str, port: u16) -> Result<(), String> {
        // A name that does not resolve fails in the HTTP client with its own error.
        let Ok(addrs) = (name, port).to_socket_addrs() else {
            return Ok(());
        };
        for addr in addrs {
            if let Some(why) = self.ip_refusal(addr.ip()) {
                return Err(format!(
                    "fetch to {name} refused by the node's egress policy (it resolves to {}, and {why} addresses are not reachable from workers)",
                    addr.ip()
                ));
            }
        }
        Ok(())
    }

    fn ip_refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let why = non_public(ip)?;
        let allowed = self.allow.iter().any(|a| match a {
            Allow::Net(net, bits) => in_net(ip, *net, *bits),
            Allow::Host(_) | Allow::Endpoint(..) => false,
        });
        (!allowed).then_some(why)
    }
}

fn parse_allow(entry: &str) -> Result<Allow, String> {
    let entry = entry.trim();
    if let Some((net, bits)) = entry.split_once('/') {
        let net: IpAddr = net
            .parse()
            .map_err(|_| format!("egress allow entry '{entry}': bad network address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("egress allow entry '{entry}': bad prefix length"))?;
        return Ok(Allow::Net(net, bits));
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(Allow::Net(ip, bits));
    }
    if entry.is_empty() || entry.contains(['/', ':', ' ']) {
        return Err(format!(
            "egress allow entry '{entry}' is not a host, address or CIDR range"
        ));
    }
    Ok(Allow::Host(
        entry.trim_end_matches('.').to_ascii_lowercase(),
    ))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Why `ip` is not a public unicast address, or `None` if it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (CGNAT)")
    } else if o[0] == 0 || ip.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("reserved")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the embedded IPv4 address decides.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        non_public_v4(v4)
    } else if s[0] == 0 && s[1..6] == [0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) addresses.
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &EgressPolicy, url: &str) -> Result<(), String> {
        policy.check(&Url::parse(url).expect("url"))
    }

    #[test]
    fn strict_policy_refuses_internal_ranges() {
        let p = EgressPolicy::strict(&[]).expect("policy");
        for url in [
            "http://127.0.0.1:8081/v1/workers",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://localhost:8081/",
            "http://foo.localhost/",
        ] {
            let err = check(&p, url).expect_err(url);
            assert!(err.contains("egress policy"), "{url}: {err}");
        }
        assert!(check(&p, "http://1.1.1.1/").is_ok());
        assert!(check(&p, "https://[2606:4700::1111]/").is_ok());
        assert!(check(&p, "ftp://1.1.1.1/").is_err());
    }

    #[test]
    fn allow_list_opens_hosts_and_ranges() {
        let p = EgressPolicy::strict(&["127.0.0.1".into(), "10.1.0.0/16".into()]).expect("p");
        assert!(check(&p, "http://127.0.0.1:9000/").is_ok());
        assert!(check(&p, "http://10.1.200.3/").is_ok());
        assert!(check(&p, "http://10.2.0.1/").is_err());
        assert!(check(&EgressPolicy::permissive(), "http://127.0.0.1/").is_ok());
        assert!(EgressPolicy::strict(&["10.0.0.0/40".into()]).is_err());
        let origin =
            EgressPolicy::strict_with_endpoints(&[], &[("127.0.0.1".into(), 9000)]).expect("p");
        assert!(check(&origin, "http://127.0.0.1:9000/x").is_ok());
        assert!(check(&origin, "http://127.0.0.1:9001/x").is_err());
        assert!(EgressPolicy::strict(&["a b".into()]).is_err());
    }
}
