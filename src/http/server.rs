//! Node start-up: isolate threads, the registry (restoring stored deployments), and
//! the two listeners. The data plane and the control plane are separate servers,
//! so existing deployments keep serving whatever happens to the control plane.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::Actor;
use actix_web::{web, App, HttpServer};

use super::control_plane::{self, ControlPlane};
use super::data_plane::{self, DataPlane};
use super::peer::PeerPlane;
use crate::actors::{DurableObjectDirectory, IsolateThreads, Restore, WorkerRegistry, WorkersView};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::js::{HostServices, IsolateLimits};
use crate::state::{DeploymentStore, KvService};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A running node.
pub struct Node {
    pub data_addr: SocketAddr,
    pub control_addr: SocketAddr,
    /// The peer listener, in a cluster.
    pub peer_addr: Option<SocketAddr>,
    /// The HTTPS data plane, with `[tls]`.
    pub https_addr: Option<SocketAddr>,
    /// Whether the plain data plane listens (`data_addr` is the HTTPS one
    /// when it does not) and the control plane speaks HTTPS.
    plain_data: bool,
    control_tls: bool,
    peer_tls: bool,
    pub view: WorkersView,
    pub registry: actix::Addr<WorkerRegistry>,
    /// Every listener's server: data planes (the first `data_servers`),
    /// control plane, peer listener.
    servers: Vec<actix_web::dev::Server>,
    data_servers: usize,
    /// Set when the node starts to stop: responses then close their
    /// connections, so clients reconnect elsewhere.
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// How long the data planes accept after a signal (`server.drain_ms`).
    drain: std::time::Duration,
    directory: actix::Addr<crate::actors::directory::DurableObjectDirectory>,
    cluster: Option<Cluster>,
}

/// How long a leaving node waits for its objects to finish what they started.
const HAND_OVER_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);
/// After its objects stopped, how long a leaving node waits before it
/// withdraws: their last answers reach the callers first (a caller that sees
/// the owner leave the ring while waiting gives the call up as lost).
const LAST_ANSWERS: std::time::Duration = std::time::Duration::from_millis(200);

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

impl Node {
    /// Serves until a signal (SIGTERM, SIGINT) or a listener stops. On a
    /// signal the data planes stop accepting connections (open ones are
    /// served on, each response closing its connection); a cluster node then
    /// hands its objects over (each finishes what it started, no new one
    /// starts) and leaves the cluster, after which its requests go to the new
    /// owners; then every listener finishes what it is serving and stops.
    pub async fn run(self) -> std::io::Result<()> {
        let Node {
            servers,
            data_servers,
            closing,
            drain,
            directory,
            cluster,
            ..
        } = self;
        let handles: Vec<_> = servers.iter().map(|s| s.handle()).collect();
        let data_handles: Vec<_> = handles.iter().take(data_servers).cloned().collect();
        // Stopping a server needs its future polled (it holds the server's
        // command channel), so every server runs to completion below while
        // this stops them: on a signal (a cluster node leaves first), or when
        // any of them ends by itself.
        let stop_all = move || {
            let handles = handles.clone();
            async move {
                for h in handles {
                    h.stop(true).await;
                }
            }
        };
        let on_signal = stop_all.clone();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping (signal): finishing open requests");
            closing.store(true, std::sync::atomic::Ordering::Relaxed);
            // The data planes accept for `drain` more (every response closing
            // its connection, /healthz draining), so that clients and load
            // balancers move away before connections are refused; meanwhile a
            // cluster node hands its objects over and leaves.
            let stop_accepting = async move {
                tokio::time::sleep(drain).await;
                for h in data_handles {
                    actix_web::rt::spawn(async move { h.stop(true).await });
                }
            };
            let hand_over = async {
                if let Some(c) = &cluster {
                    let _ = directory
                        .send(crate::actors::directory::HandOverAll {
                            within: HAND_OVER_WITHIN,
                        })
                        .await;
                    tokio::time::sleep(LAST_ANSWERS).await;
                    c.leave().await;
                }
            };
            futures::future::join(stop_accepting, hand_over).await;
            on_signal().await;
        });
        let watch = |server: actix_web::dev::Server| {
            let stop = stop_all.clone();
            async move {
                let r = server.await;
                actix_web::rt::spawn(stop());
                r
            }
        };
        let results = futures::future::join_all(servers.into_iter().map(watch)).await;
        results.into_iter().collect()
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })
}

fn local(l: &std::net::TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    l.local_addr()
        .map_err(|source| ServeError::Bind { addr, source })
}

fn ensure_token(config: &Config) -> Result<Option<String>, ServeError> {
    if config.dev {
        return Ok(None);
    }
    if !config.server.token.is_empty() {
        return Ok(Some(config.server.token.clone()));
    }
    if let Ok(t) = std::env::var("EDGED_TOKEN") {
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    let path = config.server.data_dir.join("control-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    std::fs::create_dir_all(&config.server.data_dir)
        .and_then(|_| crate::state::private_file::write(&path, token.as_bytes()))
        .map_err(|e| ServeError::Other(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(path = %path.display(), "generated a control-plane token");
    Ok(Some(token))
}

/// Starts a node. Must be called inside an actix system.
/// Raises the soft limit on open files to the hard limit (as the Go runtime
/// does): every live Durable Object holds about 5 descriptors (its SQLite
/// connections), so a low soft limit would cap live objects far below
/// `durable_objects.max_live`. Warns if even the hard limit is too low.
fn raise_open_file_limit(max_live: usize) {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        let needed = (max_live as u64).saturating_mul(5).saturating_add(1024);
        #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
        let current: u64 = lim.rlim_cur.try_into().unwrap_or(u64::MAX);
        if current < needed {
            tracing::warn!(
                open_files = current,
                max_live,
                "the open-file limit is below what durable_objects.max_live needs (about 5 per live object); \
                 activations past it will fail"
            );
        }
    }
}

pub async fn start(config: Config) -> Result<Node, ServeError> {
    config.validate()?;
    let (dev, drain_ms) = (config.dev, config.server.drain_ms);
    let hup = if config.tls.is_some()
        || config
            .cluster
            .as_ref()
            .is_some_and(|c| c.peer_cert.is_some())
    {
        Some(super::tls::hangup().map_err(ServeError::Other)?)
    } else {
        None
    };
    super::metrics::prometheus();
    raise_open_file_limit(config.durable_objects.max_live);
    // Everything the node writes is its user's alone (tokens, keys, secrets,
    // tenants' data): new files 0600, directories 0700.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    crate::state::sql_sandbox::limit_process_memory(256 << 20, 1 << 30);
    let store = Arc::new(DeploymentStore::open(&config.server.data_dir)?);
    let assets = Arc::new(
        crate::state::assets::AssetStore::open(&config.server.data_dir)
            .map_err(|e| ServeError::Other(format!("cannot open the asset store: {e}")))?,
    );
    let token = ensure_token(&config)?;
    if let Err(e) = crate::state::private_file::tighten_files(&config.server.data_dir) {
        tracing::warn!(error = %e, "cannot make the data directory's files private");
    }
    crate::state::durable::adopt_legacy_storage(&config.server.data_dir, store.adopted())?;
    KvService::check_all(&config.server.data_dir)?;
    let (object_index, _) = crate::state::alarms::AlarmIndex::open_checked(
        &crate::state::names::objects_dir(&config.server.data_dir),
        &store.storage_ids()?,
    )?;
    let limits = IsolateLimits {
        cpu: config.limits.cpu(),
        startup_cpu: config.limits.startup_cpu(),
        heap_bytes: config.limits.heap_bytes(),
        response_timeout: config.limits.response_timeout(),
    };
    let kv = KvService::new(
        &config.server.data_dir,
        (config.kv.cache_mb as usize) << 20,
        std::time::Duration::from_secs(config.kv.cache_ttl_s),
    );
    kv.spawn_purger(std::time::Duration::from_secs(
        config.kv.purge_interval_s.max(1),
    ));
    let cache: Arc<dyn crate::js::CacheBackend> = Arc::new(crate::state::HttpCache::new(
        (config.cache.size_mb as usize) << 20,
    ));
    let host = HostServices {
        kv: Some(kv.clone()),
        durable_objects: Default::default(),
        policy: Arc::new(config.runtime_policy()?),
        cache: Some(cache.clone()),
        services: Default::default(),
    };
    let durable_objects = host.durable_objects.clone();
    let services = host.services.clone();
    let threads = IsolateThreads::start(
        config.isolates.thread_count(),
        config.isolates.pool_size,
        limits,
        host,
    );
    let threads_for_objects = threads.clone();
    // Certificates before anything listens: a missing or bad file stops the
    // start with its name.
    let tls = match &config.tls {
        None => None,
        Some(t) => Some(TlsSetup {
            data: super::tls::CertResolver::new(super::tls::CertSource::data_plane(t))
                .map_err(ServeError::Other)?,
            control: super::tls::CertSource::control_plane(t)
                .map(super::tls::CertResolver::new)
                .transpose()
                .map_err(ServeError::Other)?,
            listener: bind(t.listen)?,
            config: t.clone(),
        }),
    };
    // The peer listener's certificate (`cluster.peer_cert`), reloaded with
    // the others.
    let peer_tls = match config.cluster.as_ref().map(|c| (&c.peer_cert, &c.peer_key)) {
        Some((Some(cert), Some(key))) => Some(
            super::tls::CertResolver::new(vec![super::tls::CertSource {
                hosts: Vec::new(),
                cert: cert.clone(),
                key: key.clone(),
            }])
            .map_err(ServeError::Other)?,
        ),
        _ => None,
    };
    let plain_data = tls
        .as_ref()
        .is_none_or(|t| t.config.plain_http != crate::config::PlainHttp::Off);
    // Listeners first: a cluster node tells the others where they are.
    let data_listener = if plain_data {
        Some(bind(config.server.listen)?)
    } else {
        None
    };
    let https_addr = match &tls {
        Some(t) => Some(local(&t.listener, t.config.listen)?),
        None => None,
    };
    let data_addr = match (&data_listener, https_addr) {
        (Some(l), _) => local(l, config.server.listen)?,
        (None, Some(a)) => a,
        (None, None) => return Err(ServeError::Other("no data plane listener".into())),
    };
    let control_listener = bind(config.server.control_listen)?;
    let control_addr = local(&control_listener, config.server.control_listen)?;
    let (cluster, peer_listener) = match &config.cluster {
        None => (None, None),
        Some(c) => {
            let listener = bind(c.peer_listen)?;
            let peer_addr = local(&listener, c.peer_listen)?;
            let cluster = Cluster::start(
                c.clone(),
                data_addr.to_string(),
                control_addr.to_string(),
                peer_addr.to_string(),
                config
                    .limits
                    .response_timeout()
                    .unwrap_or(std::time::Duration::from_secs(3600)),
            )
            .await
            .map_err(ServeError::Other)?;
            (Some(cluster), Some((listener, peer_addr)))
        }
    };
    if let Some(cluster) = &cluster {
        crate::cluster::kv::start(cluster, kv.clone(), config.server.data_dir.clone())
            .map_err(ServeError::Other)?;
    }
    let registry = WorkerRegistry::new(store.clone(), threads, config.isolates.clone());
    let view = registry.view();
    let directory = DurableObjectDirectory::new(
        view.clone(),
        threads_for_objects,
        config.server.data_dir.clone(),
        std::time::Duration::from_secs(config.durable_objects.hibernate_after_s),
        config.durable_objects.max_queue,
    )
    .with_index(object_index)
    .with_limits(crate::actors::directory::ObjectLimits {
        max_live: config.durable_objects.max_live.max(1),
        max_object_bytes: config.durable_objects.max_object_mb << 20,
    })
    .with_cluster(cluster.clone())
    .with_socket_cap(config.durable_objects.max_websockets.max(1))
    .start();
    metrics::gauge!(crate::state::durable::STORAGE_BYTES)
        .set(crate::state::durable::stored_bytes(&config.server.data_dir.join("do")) as f64);
    let registry = registry.with_cleanup(crate::actors::Cleanup {
        objects: directory.clone().recipient(),
        cache: Some(cache),
    });
    let directory_addr = directory.clone();
    let directory_for_stop = directory.clone();
    let objects = crate::actors::directory::handle(directory.clone(), cluster.clone());
    durable_objects.set(objects.clone());
    services.set(crate::actors::services::backend(
        view.clone(),
        assets.clone(),
    ));
    crate::actors::cron::CronScheduler::new(view.clone())
        .with_cluster(cluster.clone())
        .start();
    if let Some(cluster) = &cluster {
        let fence_to = directory.clone();
        cluster.on_fence(move |fenced| {
            if fenced {
                fence_to.do_send(crate::actors::directory::FenceAll);
            }
        });
    }
    let registry = registry.start();
    let failed = registry
        .send(Restore)
        .await
        .map_err(|e| ServeError::Other(e.to_string()))?;
    for (name, e) in failed {
        tracing::error!(worker = %name, error = %e, "worker not restored");
    }
    if let Some(cluster) = &cluster {
        // Deployments applied here fetch their asset blobs into this store.
        cluster.set_asset_store(assets.clone());
        crate::actors::deploy_sync::spawn_watcher(
            cluster.clone(),
            registry.clone(),
            view.clone(),
            store.clone(),
        );
        crate::actors::account_sync::spawn_watcher(
            cluster.clone(),
            registry.clone(),
            store.clone(),
        );
    }

    let body_limit = config.body_limit();
    let colo = if !config.server.colo.is_empty() {
        config.server.colo.clone()
    } else if let Some(c) = &config.cluster {
        c.region.clone()
    } else {
        "local".to_owned()
    };
    let mut plane = DataPlane::new(view.clone(), body_limit)
        .with_assets(assets.clone())
        .with_colo(&colo)
        .with_socket_cap(config.limits.websockets_per_worker);
    if let (Some(t), Some(addr)) = (&tls, https_addr) {
        if t.config.plain_http == crate::config::PlainHttp::Redirect {
            plane = plane.redirecting_to(addr.port());
        }
    }
    let data_plane = web::Data::new(plane);
    let closing = data_plane.closing();
    let mut servers = Vec::new();
    if let (Some(t), Some(addr)) = (&tls, https_addr) {
        let listener = t
            .listener
            .try_clone()
            .map_err(|source| ServeError::Bind { addr, source })?;
        servers.push(
            super::tls::https_server(
                listener,
                t.data.clone(),
                std::time::Duration::from_secs(t.config.handshake_timeout_s),
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                data_plane.clone(),
            )
            .map_err(ServeError::Other)?,
        );
    }
    let mut resolvers: Vec<_> = tls
        .iter()
        .flat_map(|t| std::iter::once(t.data.clone()).chain(t.control.clone()))
        .collect();
    resolvers.extend(peer_tls.clone());
    if let Some(hup) = hup {
        let every = tls.as_ref().map(|t| t.config.reload_s).unwrap_or(2);
        super::tls::spawn_reloader(resolvers, std::time::Duration::from_secs(every), hup);
    }
    let http_workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if let Some(data_listener) = data_listener {
        let data_server = HttpServer::new(move || {
            App::new()
                .app_data(data_plane.clone())
                .default_service(web::to(data_plane::serve))
        })
        .workers(http_workers)
        // Signals are handled once, in `Node::run` (a cluster node leaves first).
        .disable_signals()
        .shutdown_timeout(10)
        // A client that closes its side is gone: its request is dropped (and the
        // isolate ends it) instead of running on for nobody.
        .h1_allow_half_closed(false)
        // What `request.cf` says of the connection.
        .on_connect(|conn, ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                ext.insert(super::tls::ConnInfo::plain(tcp));
            }
        })
        .listen(data_listener)
        .map_err(|source| ServeError::Bind {
            addr: config.server.listen,
            source,
        })?;
        servers.push(data_server.run());
    }
    let data_servers = servers.len();

    let control = web::Data::new(ControlPlane {
        closing: closing.clone(),
        registry: registry.clone(),
        directory: directory_addr,
        view: view.clone(),
        store: store.clone(),
        assets,
        kv,
        token,
        metrics_token: config.server.metrics_token,
        body_limit,
        cluster: cluster
            .clone()
            .map(|cluster| crate::actors::deploy_sync::ClusterDeploys {
                cluster,
                registry: registry.clone(),
                store: store.clone(),
            }),
    });
    let control_server = HttpServer::new(move || {
        App::new()
            .app_data(control.clone())
            .configure(control_plane::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(10);
    let control_tls = tls.as_ref().and_then(|t| t.control.clone());
    let control_server = match &control_tls {
        Some(resolver) => control_server.listen_rustls_0_23(
            control_listener,
            std::sync::Arc::unwrap_or_clone(
                super::tls::server_config(resolver.clone(), false).map_err(ServeError::Other)?,
            ),
        ),
        None => control_server.listen(control_listener),
    }
    .map_err(|source| ServeError::Bind {
        addr: config.server.control_listen,
        source,
    })?;
    servers.push(control_server.run());

    let cluster_handle = cluster.clone();
    let peer_tls_on = peer_tls.is_some();
    let (peer, peer_addr) = match (cluster, peer_listener) {
        (Some(cluster), Some((listener, addr))) => {
            let plane = web::Data::new(PeerPlane { cluster, objects });
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(plane.clone())
                    .app_data(web::PayloadConfig::new(usize::MAX))
                    .configure(super::peer::configure)
            })
            // The reply's HTTP head and its frame leave in separate writes;
            // without this, Nagle holds the frame for the caller's delayed ACK
            // (40 ms a call).
            .on_connect(|conn, _| {
                type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
                if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                    let _ = tcp.set_nodelay(true);
                } else if let Some(tls) = conn.downcast_ref::<Tls>() {
                    let _ = tls.get_ref().0.set_nodelay(true);
                }
            })
            .workers(http_workers)
            .disable_signals()
            .shutdown_timeout(10);
            let server = match &peer_tls {
                Some(resolver) => server.listen_rustls_0_23(
                    listener,
                    Arc::unwrap_or_clone(
                        super::tls::server_config(resolver.clone(), false)
                            .map_err(ServeError::Other)?,
                    ),
                ),
                None => server.listen(listener),
            }
            .map_err(|source| ServeError::Bind { addr, source })?;
            (Some(server.run()), Some(addr))
        }
        _ => (None, None),
    };
    servers.extend(peer);

    Ok(Node {
        data_addr,
        control_addr,
        peer_addr,
        https_addr,
        plain_data,
        control_tls: control_tls.is_some(),
        peer_tls: peer_tls_on,
        view,
        registry,
        servers,
        data_servers,
        closing,
        // `edged dev` stops at once.
        drain: if dev {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_millis(drain_ms)
        },
        directory: directory_for_stop,
        cluster: cluster_handle,
    })
}

/// `[tls]` loaded at start.
struct TlsSetup {
    data: std::sync::Arc<super::tls::CertResolver>,
    control: Option<std::sync::Arc<super::tls::CertResolver>>,
    listener: std::net::TcpListener,
    config: crate::config::TlsConfig,
}

fn announce(node: &Node) {
    // Tests and scripts read these lines to find the ports.
    let scheme = if node.plain_data { "http" } else { "https" };
    println!(
        "edged: data plane listening on {scheme}://{}",
        node.data_addr
    );
    if let (true, Some(a)) = (node.plain_data, node.https_addr) {
        println!("edged: HTTPS data plane listening on https://{a}");
    }
    let scheme = if node.control_tls { "https" } else { "http" };
    println!(
        "edged: control plane listening on {scheme}://{}",
        node.control_addr
    );
    if let Some(peer) = node.peer_addr {
        let scheme = if node.peer_tls { "https" } else { "http" };
        println!("edged: peer listener on {scheme}://{peer}");
    }
}

/// `edged serve`: runs a node until it is stopped.
pub fn serve_blocking(config: Config) -> Result<(), ServeError> {
    actix::System::new().block_on(async move {
        let node = start(config).await?;
        announce(&node);
        node.run()
            .await
            .map_err(|e| ServeError::Other(e.to_string()))
    })
}

/// `edged dev`: runs a node with one worker deployed from local files.
pub fn dev_blocking(
    config: Config,
    script: crate::js::WorkerScript,
    routes: Vec<String>,
) -> Result<(), ServeError> {
    actix::System::new().block_on(async move {
        let node = start(config).await?;
        let name = script.name.clone();
        let activated = node
            .registry
            .send(crate::actors::Deploy {
                hosts: routes
                    .iter()
                    .filter_map(|r| crate::state::hosts::HostPattern::parse_route(r).ok())
                    .map(|(h, _)| h.canonical())
                    .collect(),
                script,
                routes,
            })
            .await
            .map_err(|e| ServeError::Other(e.to_string()))?
            .map_err(|e| ServeError::Other(format!("cannot deploy {name}: {e}")))?;
        announce(&node);
        println!(
            "edged: worker '{}' version {} is live; try: curl http://{}/ -H 'host: {}.workers.localhost'",
            activated.name, activated.version, node.data_addr, activated.name
        );
        node.run().await.map_err(|e| ServeError::Other(e.to_string()))
    })
}
