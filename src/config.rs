//! Node configuration: the types behind `config/edged.toml`.
//!
//! Every field has a default (the values in DESIGN.md), so an empty file, or no file at
//! all, gives a working node. The shipped `config/edged.toml` lists every key with a
//! comment; `tests` check that it parses to exactly these defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration of one node.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub isolates: IsolateConfig,
    pub durable_objects: DurableObjectConfig,
    pub kv: KvConfig,
    pub egress: EgressConfig,
    pub cache: CacheConfig,
    /// Present: this node is one PoP of a cluster (`src/cluster/`); absent: a
    /// standalone node that needs no NATS.
    pub cluster: Option<ClusterConfig>,
    /// Present: the data plane also serves HTTPS (`src/http/tls.rs`), and the
    /// control plane may.
    pub tls: Option<TlsConfig>,
    /// `edged dev`: no control-plane token, permissive egress.
    #[serde(skip)]
    pub dev: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub control_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token: String,
    /// `/metrics` needs the operator's token (its series name workers and
    /// namespaces).
    pub metrics_token: bool,
    pub request_body_mb: u64,
    pub pass_through_origin: String,
    /// The PoP's name as workers see it in `request.cf.colo`; empty: the
    /// cluster region, or `local`.
    pub colo: String,
    /// After SIGTERM, how long the data plane still accepts connections
    /// (answering each with `Connection: close`, `/healthz` 503 draining)
    /// before it refuses them, in milliseconds.
    pub drain_ms: u64,
}

/// Per-request and per-isolate resource limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub cpu_ms: u64,
    pub startup_cpu_ms: u64,
    pub memory_mb: u64,
    pub subrequests: u32,
    pub wait_until_s: u64,
    /// Wall time to produce a response (its head); 0: no limit.
    pub response_timeout_s: u64,
    /// Client WebSockets one worker may hold open on the node; an upgrade
    /// past it gets a 429.
    pub websockets_per_worker: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IsolateConfig {
    pub threads: usize,
    pub pool_size: usize,
    pub min_warm: usize,
    pub max_isolates: usize,
    pub grow_at_in_flight: usize,
    pub idle_reap_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DurableObjectConfig {
    pub hibernate_after_s: u64,
    pub max_queue: usize,
    pub max_live: usize,
    pub max_object_mb: u64,
    /// Hibernatable WebSockets (`ctx.acceptWebSocket`) one object may hold.
    pub max_websockets: usize,
}

/// Where workers' outbound `fetch()` may go.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    pub allow_private: bool,
    pub allow: Vec<String>,
}

/// The Cache API's per-node store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub size_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { size_mb: 64 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    pub cache_ttl_s: u64,
    pub cache_mb: u64,
    /// How often expired keys are purged and namespaces compacted.
    pub purge_interval_s: u64,
}

/// What the plain-HTTP data plane does once HTTPS is on.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlainHttp {
    /// Serves workers as before.
    #[default]
    Serve,
    /// Answers every request with a 308 to the same URL on `https:`.
    Redirect,
    /// Not listened on at all.
    Off,
}

/// One certificate, for the host names it covers (chosen by SNI).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostCertificate {
    /// Names this certificate answers for: `shop.example`, or `*.shop.example`
    /// (one label).
    pub hosts: Vec<String>,
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[tls]`: HTTPS at the PoP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Where the HTTPS data plane listens (HTTP/2 and HTTP/1.1 by ALPN).
    pub listen: SocketAddr,
    /// The certificate for names no `certificates` entry covers (and for
    /// clients that send no SNI); empty: such handshakes are refused.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Per-host certificates, chosen by SNI.
    pub certificates: Vec<HostCertificate>,
    /// The plain-HTTP data plane (`server.listen`): serve, redirect or off.
    pub plain_http: PlainHttp,
    /// The control plane's certificate and key: set, it speaks only HTTPS.
    pub control_cert: Option<PathBuf>,
    pub control_key: Option<PathBuf>,
    /// How often the certificate files are checked for change, in seconds
    /// (0: only on SIGHUP). Open connections are never dropped by a reload.
    pub reload_s: u64,
    /// A handshake that has not completed in this long is dropped.
    pub handshake_timeout_s: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            cert: None,
            key: None,
            certificates: Vec::new(),
            plain_http: PlainHttp::Serve,
            control_cert: None,
            control_key: None,
            reload_s: 2,
            handshake_timeout_s: 10,
        }
    }
}

impl TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.cert.is_some() != self.key.is_some() {
            return bad("tls.cert and tls.key go together");
        }
        if self.control_cert.is_some() != self.control_key.is_some() {
            return bad("tls.control_cert and tls.control_key go together");
        }
        if self.cert.is_none() && self.certificates.is_empty() {
            return bad("[tls] needs tls.cert/tls.key or at least one [[tls.certificates]]");
        }
        for c in &self.certificates {
            if c.hosts.is_empty() {
                return bad("each [[tls.certificates]] needs hosts");
            }
            for h in &c.hosts {
                let name = h.strip_prefix("*.").unwrap_or(h);
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    return Err(ConfigError::Invalid(format!(
                        "tls.certificates: '{h}' is not a host name or '*.' wildcard"
                    )));
                }
            }
        }
        if self.handshake_timeout_s == 0 {
            return bad("tls.handshake_timeout_s must be > 0");
        }
        Ok(())
    }
}

/// `[cluster]`: this node's place in a cluster of PoPs on NATS JetStream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster: 1–32 of `a-z 0-9 -`.
    pub node_id: String,
    /// The region the node is in (a name such as `eu-west`; same alphabet).
    pub region: String,
    /// The NATS core's client URLs.
    pub nats: Vec<String>,
    /// Where other nodes send remote actor messages.
    pub peer_listen: SocketAddr,
    /// The address other nodes use to reach `peer_listen` (default: the bound one).
    pub peer_advertise: String,
    /// Shared by every node; a peer message without it is refused. Also read
    /// from `EDGED_CLUSTER_SECRET`; at least 16 characters.
    pub secret: String,
    /// Replicas of every JetStream stream and bucket (3 in production).
    pub replicas: usize,
    /// Virtual nodes per member on the hash ring.
    pub vnodes: usize,
    /// How often the node renews its membership, in ms.
    pub heartbeat_ms: u64,
    /// Membership lease, in ms: a node that cannot renew for this long stops
    /// serving Durable Object events by itself, and the others count it gone.
    pub lease_ms: u64,
    /// How long a remote call may wait for the owner's answer head, in seconds.
    pub peer_timeout_s: u64,
    /// How long the KV log keeps a write, in seconds; a node away for longer
    /// catches up from the latest snapshot.
    pub kv_log_max_age_s: u64,
    /// How often the KV snapshot is refreshed, in seconds (by one node).
    pub kv_snapshot_interval_s: u64,
    /// TLS on the peer transport: this node's certificate and key (PEM) for
    /// its peer listener, and the CA (PEM) every peer's certificate must
    /// chain to. All three or none; none: plain HTTP between PoPs.
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            region: "default".into(),
            nats: vec!["nats://127.0.0.1:4222".into()],
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            peer_advertise: String::new(),
            secret: String::new(),
            replicas: 3,
            vnodes: 128,
            heartbeat_ms: 1000,
            lease_ms: 3000,
            peer_timeout_s: 30,
            kv_log_max_age_s: 7 * 86_400,
            kv_snapshot_interval_s: 600,
            peer_cert: None,
            peer_key: None,
            peer_ca: None,
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let ok_name = crate::js::durable::is_cluster_name;
        if !ok_name(&self.node_id) {
            return bad("cluster.node_id must be 1-32 of a-z, 0-9, '-'".into());
        }
        if !ok_name(&self.region) {
            return bad("cluster.region must be 1-32 of a-z, 0-9, '-'".into());
        }
        if self.nats.is_empty() {
            return bad("cluster.nats needs at least one URL".into());
        }
        for url in &self.nats {
            if url.parse::<async_nats::ServerAddr>().is_err() {
                return bad(format!("cluster.nats: '{url}' is not a NATS URL"));
            }
        }
        if self.secret().len() < 16 {
            return bad(
                "cluster.secret (or EDGED_CLUSTER_SECRET) must be at least 16 characters".into(),
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("cluster.replicas must be 1 to 5".into());
        }
        let tls = [&self.peer_cert, &self.peer_key, &self.peer_ca];
        if tls.iter().any(|p| p.is_some()) && !tls.iter().all(|p| p.is_some()) {
            return bad("cluster.peer_cert, peer_key and peer_ca go together".into());
        }
        if self.kv_snapshot_interval_s == 0 || self.kv_snapshot_interval_s >= self.kv_log_max_age_s
        {
            return bad(
                "cluster.kv_snapshot_interval_s must be > 0 and less than kv_log_max_age_s".into(),
            );
        }
        if self.vnodes == 0 || self.heartbeat_ms == 0 || self.peer_timeout_s == 0 {
            return bad("cluster.vnodes, heartbeat_ms and peer_timeout_s must be > 0".into());
        }
        if self.lease_ms < 2 * self.heartbeat_ms {
            return bad("cluster.lease_ms must be at least twice cluster.heartbeat_ms".into());
        }
        Ok(())
    }

    /// The cluster secret: the config's, else `EDGED_CLUSTER_SECRET`.
    pub fn secret(&self) -> String {
        if !self.secret.is_empty() {
            return self.secret.clone();
        }
        std::env::var("EDGED_CLUSTER_SECRET").unwrap_or_default()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            control_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("./.edged"),
            token: String::new(),
            metrics_token: false,
            request_body_mb: 100,
            pass_through_origin: String::new(),
            colo: String::new(),
            drain_ms: 1000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_ms: 50,
            startup_cpu_ms: 400,
            memory_mb: 128,
            subrequests: 50,
            wait_until_s: 30,
            response_timeout_s: 300,
            websockets_per_worker: 10_000,
        }
    }
}

impl Limits {
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }
    pub fn startup_cpu(&self) -> Duration {
        Duration::from_millis(self.startup_cpu_ms)
    }
    pub fn wait_until(&self) -> Duration {
        Duration::from_secs(self.wait_until_s)
    }
    pub fn heap_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
    pub fn response_timeout(&self) -> Option<Duration> {
        (self.response_timeout_s > 0).then(|| Duration::from_secs(self.response_timeout_s))
    }
}

impl Default for IsolateConfig {
    fn default() -> Self {
        IsolateConfig {
            threads: 0,
            pool_size: 2,
            min_warm: 1,
            max_isolates: 4,
            grow_at_in_flight: 8,
            idle_reap_s: 60,
        }
    }
}

impl IsolateConfig {
    /// Isolate threads to start: `threads`, or one per core when 0.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

impl Default for DurableObjectConfig {
    fn default() -> Self {
        DurableObjectConfig {
            hibernate_after_s: 10,
            max_queue: 1000,
            max_live: 2_000,
            max_object_mb: 10_240,
            max_websockets: 32_768,
        }
    }
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            cache_ttl_s: 60,
            cache_mb: 64,
            purge_interval_s: 30,
        }
    }
}

/// A configuration file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; missing keys take their defaults.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.limits.cpu_ms == 0 || self.limits.startup_cpu_ms == 0 {
            return bad("limits.cpu_ms and limits.startup_cpu_ms must be > 0");
        }
        if self.limits.memory_mb < 16 {
            return bad("limits.memory_mb must be at least 16");
        }
        if self.isolates.max_isolates == 0 || self.isolates.min_warm > self.isolates.max_isolates {
            return bad("isolates.max_isolates must be > 0 and >= isolates.min_warm");
        }
        if self.isolates.grow_at_in_flight == 0 {
            return bad("isolates.grow_at_in_flight must be > 0");
        }
        if !self.server.pass_through_origin.is_empty() {
            let ok = deno_core::url::Url::parse(&self.server.pass_through_origin)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return bad("server.pass_through_origin must be an http(s) URL");
            }
        }
        if let Err(e) = crate::js::EgressPolicy::strict(&self.egress.allow) {
            return Err(ConfigError::Invalid(e));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }

    /// The runtime rules isolates enforce, from `[limits]`, `[egress]` and the
    /// pass-through origin (whose host and port are always reachable).
    pub fn runtime_policy(&self) -> Result<crate::js::RuntimePolicy, ConfigError> {
        let origin = (!self.server.pass_through_origin.is_empty()).then(|| {
            self.server
                .pass_through_origin
                .trim_end_matches('/')
                .to_owned()
        });
        let egress = if self.dev || self.egress.allow_private {
            crate::js::EgressPolicy::permissive()
        } else {
            let endpoints: Vec<(String, u16)> = origin
                .as_deref()
                .and_then(|o| deno_core::url::Url::parse(o).ok())
                .and_then(|u| Some((u.host_str()?.to_owned(), u.port_or_known_default()?)))
                .into_iter()
                .collect();
            crate::js::EgressPolicy::strict_with_endpoints(&self.egress.allow, &endpoints)
                .map_err(ConfigError::Invalid)?
        };
        Ok(crate::js::RuntimePolicy {
            egress: std::sync::Arc::new(egress),
            subrequests: self.limits.subrequests,
            wait_until: self.limits.wait_until(),
            pass_through_origin: origin,
        })
    }

    pub fn body_limit(&self) -> usize {
        (self.server.request_body_mb as usize) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_matches_defaults() {
        let text = include_str!("../config/edged.toml");
        let parsed = Config::parse(text).expect("shipped config parses");
        assert_eq!(parsed, Config::default());
    }

    /// The shipped file's commented `[cluster]` section, uncommented, is the
    /// cluster defaults plus the keys a node must set.
    #[test]
    fn shipped_cluster_section_parses() {
        let text = include_str!("../config/edged.toml");
        let section: String = text
            .lines()
            .skip_while(|l| *l != "# [cluster]")
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = Config::parse(&section).expect("cluster section parses");
        let cluster = parsed.cluster.expect("a [cluster] section");
        assert_eq!(cluster.node_id, "pop-1");
        assert_eq!(cluster.vnodes, ClusterConfig::default().vnodes);
        assert_eq!(cluster.lease_ms, ClusterConfig::default().lease_ms);
        assert!(cluster.validate().is_ok());
    }

    /// The shipped file's commented `[tls]` section, uncommented, parses and
    /// validates.
    #[test]
    fn shipped_tls_section_parses() {
        let text = include_str!("../config/edged.toml");
        let section: String = text
            .lines()
            .skip_while(|l| *l != "# [tls]")
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed = Config::parse(&section).expect("tls section parses");
        let tls = parsed.tls.expect("a [tls] section");
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.reload_s, TlsConfig::default().reload_s);
        assert!(tls.validate().is_ok());
        let mut bad = tls.clone();
        bad.certificates[0].hosts = vec!["bad host".into()];
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::parse("[server]\nlisten_typo = 1").is_err());
    }

    #[test]
    fn invalid_values_are_rejected() {
        let mut c = Config::default();
        c.isolates.min_warm = 10;
        assert!(c.validate().is_err());
    }
}
