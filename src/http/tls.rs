//! TLS at the PoP: the HTTPS data plane, certificates chosen by SNI and
//! reloaded in place, and what each connection tells the worker.
//!
//! The HTTPS listener is an `actix-server` service of our own in front of
//! `actix-http` (the same HTTP/1.1 and HTTP/2 stack the plain listener
//! uses), so every connection's TLS outcome is seen here: a first byte
//! that is not a TLS handshake record gets a plain-HTTP 400 and is closed
//! (`outcome="plain_http"`), a handshake that fails or stalls past
//! `handshake_timeout_s` is dropped (`failed`, `unknown_sni`, `timeout`), and
//! none of it touches another connection. ALPN picks HTTP/2 or HTTP/1.1.
//!
//! Certificates live in a [`CertResolver`]: exact names, then one-label
//! wildcards, then the default; the set is an `Arc` swapped whole when a
//! file changes (checked every `reload_s`) or on SIGHUP, so handshakes in
//! progress and open connections keep what they started with and a reload
//! drops nothing. A reload that fails to read or parse keeps the old set.
//!
//! Each connection's [`ConnInfo`] (TLS version and cipher, the kernel's TCP
//! RTT estimate) rides on the connection; the data plane turns it into
//! `request.cf` and `https:` URLs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use parking_lot::RwLock;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;

use super::data_plane::{self, DataPlane};
use crate::config::TlsConfig;

/// Handshakes, by `outcome` (`ok`, `failed`, `unknown_sni`, `timeout`,
/// `plain_http`) and `version` (`TLSv1_3`, `TLSv1_2`, or `none`).
pub const HANDSHAKES: &str = "edged_tls_handshakes_total";
/// TLS connections open now.
pub const ACTIVE: &str = "edged_tls_connections_active";
/// Certificate reloads, by `outcome` (`ok`, `failed`).
pub const RELOADS: &str = "edged_tls_reloads_total";

/// One certificate and the names it answers for (none: the default).
#[derive(Debug, Clone)]
pub struct CertSource {
    pub hosts: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertSource {
    /// The data plane's certificates from `[tls]`.
    pub fn data_plane(tls: &TlsConfig) -> Vec<CertSource> {
        let mut out: Vec<CertSource> = tls
            .certificates
            .iter()
            .map(|c| CertSource {
                hosts: c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect();
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            out.push(CertSource {
                hosts: Vec::new(),
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        out
    }

    /// The control plane's certificate, if `[tls]` gives it one.
    pub fn control_plane(tls: &TlsConfig) -> Option<Vec<CertSource>> {
        match (&tls.control_cert, &tls.control_key) {
            (Some(cert), Some(key)) => Some(vec![CertSource {
                hosts: Vec::new(),
                cert: cert.clone(),
                key: key.clone(),
            }]),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Certs {
    default: Option<Arc<CertifiedKey>>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.shop.example` under `shop.example`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// Reads one certificate chain and its key; the error names the file.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read TLS file {}: {e}", p.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| format!("{} is not a PEM private key: {e}", key.display()))?;
    let signer = any_supported_type(&der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        format!(
            "{} does not match the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(pair)
}

fn load(sources: &[CertSource]) -> Result<Certs, String> {
    let mut certs = Certs::default();
    for s in sources {
        let pair = Arc::new(load_pair(&s.cert, &s.key)?);
        if s.hosts.is_empty() {
            certs.default = Some(pair);
            continue;
        }
        for h in &s.hosts {
            match h.strip_prefix("*.") {
                Some(parent) => certs.wildcard.insert(parent.to_owned(), pair.clone()),
                None => certs.exact.insert(h.clone(), pair.clone()),
            };
        }
    }
    Ok(certs)
}

/// What identifies a file's content cheaply: modification time and length.
fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The certificates a listener chooses from, by SNI; reloadable in place.
pub struct CertResolver {
    sources: Vec<CertSource>,
    certs: RwLock<Arc<Certs>>,
    stamps: parking_lot::Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("sources", &self.sources)
            .finish()
    }
}

impl CertResolver {
    /// Loads every certificate now; the error names the file that failed.
    pub fn new(sources: Vec<CertSource>) -> Result<Arc<CertResolver>, String> {
        let certs = load(&sources)?;
        let stamps = Self::stamps_of(&sources);
        Ok(Arc::new(CertResolver {
            sources,
            certs: RwLock::new(Arc::new(certs)),
            stamps: parking_lot::Mutex::new(stamps),
        }))
    }

    fn stamps_of(sources: &[CertSource]) -> Vec<Option<(SystemTime, u64)>> {
        sources
            .iter()
            .flat_map(|s| [stamp(&s.cert), stamp(&s.key)])
            .collect()
    }

    /// Reloads when a file changed (or always, `force`); `Ok(true)` when a
    /// new set is in use. On an error the old set stays.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let now = Self::stamps_of(&self.sources);
        if !force && *self.stamps.lock() == now {
            return Ok(false);
        }
        let result = load(&self.sources);
        // Remembered either way: a broken file is reported once per change.
        *self.stamps.lock() = now;
        match result {
            Ok(certs) => {
                *self.certs.write() = Arc::new(certs);
                metrics::counter!(RELOADS, "outcome" => "ok").increment(1);
                Ok(true)
            }
            Err(e) => {
                metrics::counter!(RELOADS, "outcome" => "failed").increment(1);
                Err(e)
            }
        }
    }

    fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().clone();
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = certs.exact.get(&name) {
                return Some(c.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(c) = certs.wildcard.get(parent) {
                    return Some(c.clone());
                }
            }
        }
        certs.default.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = self.pick(hello.server_name());
        if picked.is_none() {
            tracing::info!(sni = ?hello.server_name(), "TLS handshake refused: no certificate for this name and no default");
        }
        picked
    }
}

/// A rustls server config on `resolver`: TLS 1.3 and 1.2, ALPN h2 (with
/// `h2`) then http/1.1.
pub fn server_config(
    resolver: Arc<CertResolver>,
    h2: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// SIGHUP, registered at the start of a node with certificates (before
/// anything listens: its default action would end the process).
pub fn hangup() -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot handle SIGHUP (certificate reload): {e}"))
}

/// Reloads `resolvers` when their files change (every `every`; never if
/// zero) and on SIGHUP, for as long as the node runs.
pub fn spawn_reloader(
    resolvers: Vec<Arc<CertResolver>>,
    every: Duration,
    hup: tokio::signal::unix::Signal,
) {
    let mut hup = Some(hup);
    actix::spawn(async move {
        loop {
            let tick = async {
                if every.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(every).await
                }
            };
            let force = tokio::select! {
                _ = tick => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            for r in &resolvers {
                match r.reload(force) {
                    Ok(true) => tracing::info!("TLS certificates reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificates not reloaded; the previous ones stay in use")
                    }
                }
            }
        }
    });
}

/// What the data plane knows of a request's connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// `TLSv1.3` and the cipher suite (IANA name), on a TLS connection.
    pub tls: Option<(&'static str, String)>,
    /// The kernel's smoothed RTT of the TCP connection at its start, in ms.
    pub rtt_ms: Option<u32>,
}

impl ConnInfo {
    /// A plain TCP connection.
    pub fn plain(tcp: &TcpStream) -> ConnInfo {
        ConnInfo {
            tls: None,
            rtt_ms: tcp_rtt_ms(tcp),
        }
    }
}

/// Counts a TLS connection open until its info is dropped with it.
#[derive(Debug)]
struct ActiveGuard;

impl ActiveGuard {
    fn new() -> ActiveGuard {
        metrics::gauge!(ACTIVE).increment(1.0);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        metrics::gauge!(ACTIVE).decrement(1.0);
    }
}

#[cfg(target_os = "linux")]
fn tcp_rtt_ms(tcp: &TcpStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data that the kernel fills in, up to `len`
    // bytes; the descriptor is the live socket this stream owns.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (r == 0).then_some(info.tcpi_rtt / 1000)
    }
}

#[cfg(not(target_os = "linux"))]
fn tcp_rtt_ms(_: &TcpStream) -> Option<u32> {
    None
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

fn handshake(outcome: &'static str, version: &'static str) {
    metrics::counter!(HANDSHAKES, "outcome" => outcome, "version" => version).increment(1);
}

const PLAIN_HTTP_BODY: &str = "{\"error\":{\"code\":\"tls_required\",\"message\":\"this port speaks HTTPS; use an https:// URL\"}}\n";

fn plain_http_answer() -> Vec<u8> {
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    )
    .into_bytes()
}

/// A TLS stream counted in [`ACTIVE`] for as long as the connection holds it.
pub struct Counted {
    inner: TlsStream,
    _active: ActiveGuard,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts one connection's TLS, or says why not (logged and counted here).
async fn accept(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(Counted, actix_http::Protocol, Option<std::net::SocketAddr>), ()> {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    let work = async {
        // A TLS connection starts with a handshake record (0x16); anything
        // else is most likely plain HTTP sent to the wrong port.
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) | Err(_) => return Err("closed"),
            Ok(_) if first[0] != 0x16 => {
                let mut tcp = tcp;
                let _ = tcp.write_all(&plain_http_answer()).await;
                let _ = tcp.shutdown().await;
                return Err("plain_http");
            }
            Ok(_) => {}
        }
        acceptor.accept(tcp).await.map_err(|e| {
            let text = e.to_string();
            tracing::debug!(peer = ?peer, error = %text, "TLS handshake failed");
            if text.contains("no server certificate chain resolved") {
                "unknown_sni"
            } else {
                "failed"
            }
        })
    };
    let stream = match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            handshake("timeout", "none");
            tracing::debug!(peer = ?peer, "TLS handshake timed out");
            return Err(());
        }
        Ok(Err("closed")) => return Err(()),
        Ok(Err(outcome)) => {
            handshake(outcome, "none");
            if outcome == "plain_http" {
                tracing::debug!(peer = ?peer, "plain HTTP on the TLS port: answered 400");
            }
            return Err(());
        }
        Ok(Ok(s)) => s,
    };
    let conn = stream.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1_3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1_2",
        _ => "other",
    };
    handshake("ok", version);
    let protocol = if conn.alpn_protocol() == Some(b"h2") {
        actix_http::Protocol::Http2
    } else {
        actix_http::Protocol::Http1
    };
    Ok((
        Counted {
            inner: stream,
            _active: ActiveGuard::new(),
        },
        protocol,
        peer,
    ))
}

fn conn_info(io: &Counted) -> ConnInfo {
    let (tcp, conn) = io.inner.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .map(workers_cipher_name)
        .unwrap_or("")
        .to_owned();
    ConnInfo {
        tls: Some((version, cipher)),
        rtt_ms: tcp_rtt_ms(tcp),
    }
}

/// A cipher suite as `request.cf.tlsCipher` names it on Workers (OpenSSL
/// style, `AEAD-` for TLS 1.3), from its IANA name.
fn workers_cipher_name(iana: &'static str) -> &'static str {
    match iana {
        "TLS13_AES_128_GCM_SHA256" => "AEAD-AES128-GCM-SHA256",
        "TLS13_AES_256_GCM_SHA384" => "AEAD-AES256-GCM-SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "AEAD-CHACHA20-POLY1305-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    }
}

/// The HTTPS data plane on `listener`: `workers` threads, each serving the
/// same [`DataPlane`] as the plain listener.
pub fn https_server(
    listener: std::net::TcpListener,
    resolver: Arc<CertResolver>,
    handshake_timeout: Duration,
    workers: usize,
    plane: web::Data<DataPlane>,
) -> Result<actix_web::dev::Server, String> {
    let config = server_config(resolver, true)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let addr = listener
        .local_addr()
        .map_err(|e| format!("HTTPS listener: {e}"))?;
    let server = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(10)
        .listen("edged-https", listener, move || {
            let acceptor = acceptor.clone();
            let app = App::new()
                .app_data(plane.clone())
                .default_service(web::to(data_plane::serve))
                .into_factory();
            let http = actix_http::HttpService::build()
                .h1_allow_half_closed(false)
                .on_connect_ext(|io: &Counted, ext: &mut actix_http::Extensions| {
                    ext.insert(conn_info(io));
                })
                .finish(map_config(app, move |_| AppConfig::default()));
            fn_service(move |tcp: TcpStream| {
                let acceptor = acceptor.clone();
                async move {
                    accept(acceptor, tcp, handshake_timeout)
                        .await
                        .map_err(|()| {
                            actix_http::error::DispatchError::Io(std::io::Error::other(
                                "TLS handshake did not complete",
                            ))
                        })
                }
            })
            .and_then(http)
        })
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        .run();
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let e = load_pair(&cert, &key).unwrap_err();
        assert!(e.contains("c.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let e = load_pair(&cert, &key).unwrap_err();
        assert!(e.contains("c.pem"), "{e}");
    }
}
