//! The cluster: N edged processes (PoPs) as one network on NATS JetStream.
//!
//! Present only when the config has a `[cluster]` section; without it nothing
//! here runs and the node is standalone. Parts:
//! - [`engine`]: the one interface to NATS JetStream (buckets, CAS, watches);
//! - membership (here): each node renews `n.<id>` in `edged_nodes` every
//!   heartbeat and watches the bucket; a member is live while its last renewal
//!   is younger than the lease. The live set feeds the [`ring`].
//! - self-fencing (here): a node whose own renewal has not been acknowledged for
//!   longer than the lease (measured from the send time of the last acknowledged
//!   renewal, on the monotonic clock) stops serving Durable Object events and
//!   drops its live objects until a renewal succeeds again;
//! - ownership ([`Cluster::locate`]): the owner of an object is the node named by
//!   its record in `edged_owners`; the first caller that finds none records the
//!   first live ring candidate with `create`, so two racing nodes get one owner.
//!   Joins do not move objects. An owner that is gone (out of the ring, and its
//!   membership record expired in the engine, so it has fenced itself) is
//!   replaced by the first live candidate with compare-and-set on the record
//!   (takeover); until then calls get a retryable error. The record's revision
//!   is the epoch.
//! - replication ([`replication`]): every commit of an object owned here is in
//!   its log in the engine before the object releases what depends on it; a new
//!   owner rebuilds the object from that log.
//!   `actors::DurableObjectDirectory::owner` asks here and is the one place
//!   callers learn who owns an id.
//! - remote actor messages ([`peer`]): a call to an object owned by another node
//!   is sent to that node's peer listener and answered the same way;
//! - deployments everywhere ([`deploys`]) and once-per-cluster claims (cron).
//!
//! All engine and peer I/O runs on the cluster's own runtime thread, so the
//! isolate threads never block on the network and every call is bounded in
//! time.

pub mod accounts;
pub mod alarms;
pub mod assets;
pub mod claims;
pub mod deploys;
pub mod engine;
pub mod kv;
pub mod peer;
pub mod replication;
pub mod ring;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::js::durable::ObjectAddress;
use crate::js::{InvokeError, InvokeRequest};
use crate::state::secrets::NodeKey;
use engine::{Buckets, Engine, EngineError};
use peer::{Outcome, PeerClient};
use ring::Placement;

/// This node's id, once it is known, for log lines (set by `edged serve`).
pub static NODE_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub const MEMBERS: &str = "edged_cluster_members";
pub const RING_CHANGES: &str = "edged_cluster_ring_changes_total";
pub const FENCED: &str = "edged_cluster_fenced";
pub const FENCE_EVENTS: &str = "edged_cluster_fence_events_total";
pub const ENGINE_UP: &str = "edged_cluster_engine_up";
pub const CLAIMS: &str = "edged_cluster_ownership_claims_total";
pub const REMOTE_CALLS: &str = "edged_cluster_remote_calls_total";
pub const REMOTE_SECONDS: &str = "edged_cluster_remote_call_seconds";
pub const FORWARDED_BYTES: &str = "edged_cluster_forwarded_bytes_total";
pub const PEER_REFUSED: &str = "edged_cluster_peer_refused_total";
pub const DEPLOYS_APPLIED: &str = "edged_cluster_deploys_applied_total";
pub const DEPLOY_PROPAGATION: &str = "edged_cluster_deploy_propagation_seconds";

/// Owner records cached per node at most.
const OWNER_CACHE: usize = 200_000;

/// What a node tells the others about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    /// host:port of its peer listener.
    pub peer: String,
    pub data: String,
    pub control: String,
    /// Changes at every start.
    pub boot: String,
    /// KV replication progress as of its last renewal.
    #[serde(default)]
    pub kv: Option<kv::KvProgress>,
}

/// Where an object lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    Local {
        epoch: u64,
    },
    Remote {
        node: String,
        peer: String,
        epoch: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OwnerRecord {
    node: String,
    #[serde(default)]
    worker: String,
    #[serde(default)]
    class: String,
}

#[derive(Clone, Debug)]
struct Owned {
    node: String,
    epoch: u64,
}

struct Members {
    seen: BTreeMap<String, (NodeInfo, Instant)>,
    placement: Arc<Placement>,
}

struct Health {
    /// Send time of the last renewal the engine acknowledged.
    last_ack: Option<Instant>,
    fenced: bool,
    ring_changes: u64,
    /// Revision of this node's first acknowledged renewal.
    first_revision: Option<u64>,
    /// Another live process renews this node's id (a configuration error):
    /// this one fences itself for good.
    duplicate: Option<String>,
    /// The node is shutting down: it serves no object again.
    leaving: bool,
    /// Its membership record is gone from the engine (or has expired): the
    /// others may take its objects, so its requests can go to them.
    withdrawn: bool,
}

impl Health {
    /// The node may serve objects: its last acknowledged renewal was sent
    /// less than a lease ago, and no other process renews its id.
    fn lease_holds(&self, lease: Duration) -> bool {
        !self.leaving
            && self.duplicate.is_none()
            && self.last_ack.is_some_and(|t| t.elapsed() <= lease)
    }
}

type FenceListener = Box<dyn Fn(bool) + Send + Sync>;

struct Inner {
    config: ClusterConfig,
    me: NodeInfo,
    lease: Duration,
    handle: tokio::runtime::Handle,
    peer_handle: tokio::runtime::Handle,
    engine: Engine,
    buckets: RwLock<Option<Buckets>>,
    members: RwLock<Members>,
    health: Mutex<Health>,
    owners: RwLock<HashMap<String, Owned>>,
    /// Objects whose local database is exactly their log's state.
    applied: Mutex<HashMap<String, replication::Applied>>,
    peers: PeerClient,
    key: NodeKey,
    on_fence: Mutex<Vec<FenceListener>>,
    /// KV replication progress here.
    kv: Mutex<kv::KvProgress>,
    /// Namespace owners the engine confirmed (a claim is never released, so
    /// an answer stays true).
    namespaces: Mutex<HashMap<String, String>>,
    /// Held by a membership renewal in flight, so that leaving never races
    /// one (a renewal landing after the withdrawal would bring it back).
    renewing: tokio::sync::Mutex<()>,
    /// Alarm entries to record in the engine, the latest per object
    /// (`alarms.rs`), and the writer's wake-up.
    alarm_pending: Mutex<alarms::Pending>,
    alarm_wake: tokio::sync::Notify,
    /// Every object's alarm entry, as the engine has them.
    alarm_entries: Mutex<alarms::Entries>,
    /// This node's static asset blobs (`assets.rs`), and which blobs it
    /// knows the engine holds.
    asset_store: RwLock<Option<Arc<crate::state::assets::AssetStore>>>,
    assets_known: Mutex<std::collections::HashSet<String>>,
}

/// This node's handle on the cluster (cheap to clone).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Where an object sits on the ring: the key its candidates are found by.
fn placement_digest(a: &ObjectAddress) -> u64 {
    ring::digest(&[&a.storage, &a.class_name, &a.id])
}

/// Owner records are keyed by a digest of the object's identity.
fn owner_key(a: &ObjectAddress) -> String {
    format!(
        "{:016x}{:016x}",
        placement_digest(a),
        ring::digest(&[&a.id, &a.class_name, &a.storage])
    )
}

fn unavailable(why: impl std::fmt::Display) -> InvokeError {
    InvokeError::Cluster(format!("Durable Object unavailable: {why} (retryable)"))
}

impl Cluster {
    /// Joins the cluster: connects to the engine in the background (a core that
    /// is down is retried for ever; the node serves its local deployments
    /// meanwhile), renews membership and watches the other members.
    pub async fn start(
        config: ClusterConfig,
        data: String,
        control: String,
        peer: String,
        answer_timeout: Duration,
    ) -> Result<Cluster, String> {
        // Two runtimes that live as long as the process: one for the engine
        // (membership renewals must not queue behind data), one for remote
        // calls and their bodies.
        let runtime = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(name)
                .enable_all()
                .build()
                .map(|rt| {
                    let handle = rt.handle().clone();
                    std::mem::forget(rt);
                    handle
                })
                .map_err(|e| format!("cannot start the cluster runtime: {e}"))
        };
        let peer_ca = match &config.peer_ca {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("cannot read cluster.peer_ca {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let handle = runtime("edged-cluster")?;
        let peer_handle = runtime("edged-peer")?;
        let name = format!("edged-{}", config.node_id);
        let urls = config.nats.clone();
        let engine = handle
            .spawn(async move { Engine::connect(&urls, &name).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let me = NodeInfo {
            id: config.node_id.clone(),
            region: config.region.clone(),
            peer: if config.peer_advertise.is_empty() {
                peer
            } else {
                config.peer_advertise.clone()
            },
            data,
            control,
            boot: uuid::Uuid::new_v4().simple().to_string(),
            kv: None,
        };
        let secret = config.secret();
        let mut seen = BTreeMap::new();
        seen.insert(me.id.clone(), (me.clone(), Instant::now()));
        let placement = Arc::new(Placement::new(
            [(me.id.clone(), me.region.clone())].into(),
            config.vnodes,
        ));
        let inner = Arc::new(Inner {
            lease: Duration::from_millis(config.lease_ms),
            peers: PeerClient::new(
                secret.clone(),
                me.id.clone(),
                Duration::from_secs(config.peer_timeout_s),
                answer_timeout,
                peer_ca.as_deref(),
            )?,
            peer_handle,
            key: NodeKey::derived(&secret, "deployment bundles"),
            me,
            config,
            handle: handle.clone(),
            engine,
            buckets: RwLock::new(None),
            members: RwLock::new(Members { seen, placement }),
            health: Mutex::new(Health {
                last_ack: None,
                fenced: true,
                ring_changes: 0,
                first_revision: None,
                duplicate: None,
                leaving: false,
                withdrawn: false,
            }),
            owners: RwLock::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            on_fence: Mutex::new(Vec::new()),
            kv: Mutex::new(kv::KvProgress::default()),
            renewing: tokio::sync::Mutex::new(()),
            namespaces: Mutex::new(HashMap::new()),
            alarm_pending: Mutex::new(HashMap::new()),
            alarm_wake: tokio::sync::Notify::new(),
            alarm_entries: Mutex::new(HashMap::new()),
            asset_store: RwLock::new(None),
            assets_known: Mutex::new(Default::default()),
        });
        metrics::gauge!(FENCED).set(1.0);
        let cluster = Cluster { inner };
        handle.spawn(cluster.clone().open_buckets());
        handle.spawn(cluster.clone().renew_membership());
        handle.spawn(cluster.clone().watch_members());
        handle.spawn(cluster.clone().check_lease());
        handle.spawn(cluster.clone().publish_alarms());
        handle.spawn(cluster.clone().watch_alarms());
        tracing::info!(node = %cluster.inner.me.id, region = %cluster.inner.me.region, "joining the cluster");
        Ok(cluster)
    }

    pub fn node_id(&self) -> &str {
        &self.inner.me.id
    }

    pub fn secret_matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let secret = self.inner.config.secret();
        secret.len() == given.len() && bool::from(secret.as_bytes().ct_eq(given))
    }

    pub fn bundle_key(&self) -> &NodeKey {
        &self.inner.key
    }

    /// Runs `f` on the cluster's runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.inner
            .handle
            .spawn(f)
            .await
            .map_err(|e| format!("cluster task failed: {e}"))
    }

    /// The buckets, once the engine has them open.
    pub fn buckets(&self) -> Result<Buckets, EngineError> {
        self.inner.buckets.read().clone().ok_or_else(|| {
            EngineError::Unreachable("the buckets are not open yet (no JetStream quorum)".into())
        })
    }

    pub fn fenced(&self) -> bool {
        self.inner.health.lock().fenced
    }

    /// `f(true)` when this node fences itself, `f(false)` when it recovers.
    pub fn on_fence(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        self.inner.on_fence.lock().push(Box::new(f));
    }

    async fn open_buckets(self) {
        let mut logged = false;
        loop {
            match self
                .inner
                .engine
                .open(
                    self.inner.config.replicas,
                    self.inner.lease,
                    Duration::from_secs(self.inner.config.kv_log_max_age_s),
                )
                .await
            {
                Ok(b) => {
                    *self.inner.buckets.write() = Some(b);
                    tracing::info!("cluster engine ready");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "the cluster engine is not reachable yet; serving local deployments meanwhile");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn renew_membership(self) {
        let every = Duration::from_millis(self.inner.config.heartbeat_ms);
        loop {
            let sent = Instant::now();
            let mut me = self.inner.me.clone();
            me.kv = Some(*self.inner.kv.lock());
            let info = bytes::Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
            let renewing = self.inner.renewing.lock().await;
            if self.inner.health.lock().leaving {
                return;
            }
            if let Ok(b) = self.buckets() {
                let put = tokio::time::timeout(every, b.announce(&self.inner.me.id, info.clone()));
                match put.await {
                    Ok(Ok(revision)) => {
                        let mut h = self.inner.health.lock();
                        h.last_ack = Some(sent);
                        h.first_revision.get_or_insert(revision);
                        drop(h);
                        metrics::gauge!(ENGINE_UP).set(1.0);
                    }
                    Ok(Err(e)) => {
                        metrics::gauge!(ENGINE_UP).set(0.0);
                        tracing::debug!(error = %e, "membership renewal failed");
                    }
                    Err(_) => metrics::gauge!(ENGINE_UP).set(0.0),
                }
            }
            drop(renewing);
            let elapsed = sent.elapsed();
            if elapsed < every {
                tokio::time::sleep(every - elapsed).await;
            }
        }
    }

    async fn watch_members(self) {
        loop {
            let changes = match self.buckets() {
                Ok(b) => b.watch_members().await,
                Err(e) => Err(e),
            };
            let mut changes = match changes {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            // This node's own renewals pass through the watch every
            // heartbeat; silence for longer means the watch's consumer was
            // lost with a core server (it does not always end by itself), so
            // it is made again.
            let stalled = Duration::from_millis(self.inner.config.heartbeat_ms * 3);
            while let Ok(Some(change)) = tokio::time::timeout(stalled, changes.next()).await {
                let Some(id) = change.key.strip_prefix("n.") else {
                    continue;
                };
                // A replayed entry is as old as the engine says, not new.
                let age = std::time::SystemTime::now()
                    .duration_since(change.created)
                    .unwrap_or_default();
                let seen_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let mut m = self.inner.members.write();
                match change
                    .value
                    .and_then(|v| serde_json::from_slice::<NodeInfo>(&v).ok())
                {
                    Some(info) if info.id == id && id == self.inner.me.id => {
                        // Our own id renewed by another process after we joined.
                        if info.boot != self.inner.me.boot {
                            let mut h = self.inner.health.lock();
                            let after_us = h.first_revision.is_some_and(|r| change.revision > r);
                            if after_us && h.duplicate.is_none() {
                                tracing::error!(peer = %info.peer, "another process renews this node's id: node ids must be unique; this node fences itself");
                                h.duplicate = Some(info.peer.clone());
                            }
                        }
                    }
                    Some(info) if info.id == id => {
                        m.seen.insert(id.to_owned(), (info, seen_at));
                    }
                    // Our own record withdrawn (by this node's previous run,
                    // leaving): this run is a member all the same.
                    None if id == self.inner.me.id => {}
                    _ => {
                        m.seen.remove(id);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every 100 ms: members whose lease ran out leave the ring; this node
    /// fences itself when its own lease ran out.
    async fn check_lease(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let lease = self.inner.lease;
            {
                let mut m = self.inner.members.write();
                let me = self.inner.me.id.clone();
                let live: BTreeMap<String, String> = m
                    .seen
                    .iter()
                    .filter(|(id, (_, at))| **id == me || at.elapsed() <= lease)
                    .map(|(id, (info, _))| (id.clone(), info.region.clone()))
                    .collect();
                if &live != m.placement.members() {
                    tracing::info!(members = ?live.keys().collect::<Vec<_>>(), "ring changed");
                    metrics::counter!(RING_CHANGES).increment(1);
                    metrics::gauge!(MEMBERS).set(live.len() as f64);
                    m.placement = Arc::new(Placement::new(live, self.inner.config.vnodes));
                    self.inner.health.lock().ring_changes += 1;
                }
            }
            self.update_fence();
        }
    }

    /// Fences this node (or lifts its fence) when its lease says so, and
    /// tells the listeners.
    fn update_fence(&self) {
        let lease = self.inner.lease;
        {
            let change = {
                let mut h = self.inner.health.lock();
                // Before its first renewal the node is not a member yet: it
                // serves no objects either.
                let fenced = !h.lease_holds(lease);
                (fenced != h.fenced).then(|| {
                    h.fenced = fenced;
                    fenced
                })
            };
            if let Some(fenced) = change {
                metrics::gauge!(FENCED).set(if fenced { 1.0 } else { 0.0 });
                if fenced {
                    // Another node may take this node's objects over meanwhile:
                    // forget who owns what, and which local databases are
                    // current (each is rebuilt from its log when next used).
                    self.inner.owners.write().clear();
                    self.inner.applied.lock().clear();
                    metrics::counter!(FENCE_EVENTS).increment(1);
                    if self.inner.health.lock().leaving {
                        tracing::warn!("leaving the cluster: this node stops serving Durable Object events and hands its objects over");
                    } else {
                        tracing::error!(lease_ms = lease.as_millis() as u64, "membership not renewed within the lease: this node fences itself and stops serving Durable Object events");
                    }
                } else {
                    tracing::warn!("membership renewed: serving Durable Object events");
                }
                for f in self.inner.on_fence.lock().iter() {
                    f(fenced);
                }
            }
        }
    }

    /// This node is shutting down: it fences itself (nothing it holds is
    /// released from now on), its objects stop, and it withdraws its
    /// membership, so the other nodes take its objects over at once instead
    /// of a lease later. The order is what makes it safe: a new owner may
    /// start only when the record is gone, and by then this node serves
    /// nothing.
    pub async fn leave(&self) {
        let this = self.clone();
        let _ = self
            .run(async move {
                let renewing = this.inner.renewing.lock().await;
                this.inner.health.lock().leaving = true;
                this.update_fence();
                let withdrawn = match this.buckets() {
                    Ok(b) => match tokio::time::timeout(
                        engine::CALL_TIMEOUT,
                        b.withdraw(&this.inner.me.id),
                    )
                    .await
                    {
                        Ok(Ok(())) => {
                            tracing::info!("membership withdrawn: the other nodes take this node's objects over");
                            true
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "cannot withdraw membership; it expires a lease from now");
                            false
                        }
                        Err(_) => {
                            tracing::warn!("withdrawing membership timed out; it expires a lease from now");
                            false
                        }
                    },
                    Err(_) => false,
                };
                drop(renewing);
                if !withdrawn {
                    // No renewal follows: the record expires a lease on.
                    tokio::time::sleep(this.inner.lease).await;
                }
                this.inner.health.lock().withdrawn = true;
            })
            .await;
    }

    fn placement(&self) -> Arc<Placement> {
        self.inner.members.read().placement.clone()
    }

    fn live_peer(&self, node: &str) -> Option<String> {
        let m = self.inner.members.read();
        m.placement.members().get(node)?;
        m.seen.get(node).map(|(info, _)| info.peer.clone())
    }

    fn classify(&self, owned: &Owned) -> Result<Placed, InvokeError> {
        if owned.node == self.inner.me.id {
            return Ok(Placed::Local { epoch: owned.epoch });
        }
        match self.live_peer(&owned.node) {
            Some(peer) => Ok(Placed::Remote {
                node: owned.node.clone(),
                peer,
                epoch: owned.epoch,
            }),
            None => Err(unavailable(format_args!(
                "owner node {} is down",
                owned.node
            ))),
        }
    }

    /// Who owns `address`: the cached owner, else the engine's record, else
    /// the first live ring candidate (among the nodes of region `hint` when
    /// it has any), recorded with compare-and-set (`refresh` skips the cache).
    pub async fn locate(
        &self,
        address: &ObjectAddress,
        hint: Option<&str>,
        refresh: bool,
    ) -> Result<Placed, InvokeError> {
        if self.fenced() {
            if self.leaving() {
                return self.route_away(address, hint).await;
            }
            let h = self.inner.health.lock();
            let why = if h.duplicate.is_some() {
                "another process uses its node id"
            } else if h.first_revision.is_none() {
                "it has not joined the cluster yet"
            } else {
                "its membership lease lapsed"
            };
            return Err(unavailable(format_args!(
                "node {} is fenced off the cluster ({why})",
                self.inner.me.id
            )));
        }
        let key = owner_key(address);
        if !refresh {
            let cached = self.inner.owners.read().get(&key).cloned();
            // A cached owner that left the ring is read again (and maybe
            // taken over).
            if let Some(owned) =
                cached.filter(|o| o.node == self.inner.me.id || self.live_peer(&o.node).is_some())
            {
                return self.classify(&owned);
            }
        }
        let buckets = self
            .buckets()
            .map_err(|e| unavailable(format_args!("{e}")))?;
        let placement = self.placement();
        let candidate = placement
            .first(placement_digest(address), hint)
            .unwrap_or(&self.inner.me.id)
            .to_owned();
        let record = OwnerRecord {
            node: candidate,
            worker: address.worker.clone(),
            class: address.class_name.clone(),
        };
        let k = key.clone();
        let live = placement.members().clone();
        let owned = self
            .run(async move {
                // A create that lost to one still being committed (the leader
                // checks against writes in flight) can read nothing for a
                // moment: read again shortly.
                for attempt in 0..20u64 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis((5 * attempt).min(100))).await;
                    }
                    if let Some((value, epoch)) = buckets.owner(&k).await? {
                        let r: OwnerRecord = serde_json::from_slice(&value).map_err(|e| {
                            EngineError::Unreachable(format!("malformed owner record: {e}"))
                        })?;
                        // Takeover: the owner is out of the ring and its
                        // membership record has expired in the engine (it has
                        // fenced itself by then), so the first live candidate
                        // takes the object with compare-and-set on the record.
                        if r.node != record.node
                            && !live.contains_key(&r.node)
                            && !buckets.member_present(&r.node).await?
                        {
                            let value =
                                bytes::Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
                            match buckets.take_owner(&k, value, epoch).await {
                                Ok(epoch) => {
                                    metrics::counter!(replication::TAKEOVERS).increment(1);
                                    tracing::warn!(from = %r.node, to = %record.node, epoch, "Durable Object taken over from a node that is gone");
                                    return Ok(Owned {
                                        node: record.node.clone(),
                                        epoch,
                                    });
                                }
                                Err(EngineError::Conflict) => continue,
                                Err(e) => return Err(e),
                            }
                        }
                        return Ok(Owned {
                            node: r.node,
                            epoch,
                        });
                    }
                    let value = bytes::Bytes::from(serde_json::to_vec(&record).unwrap_or_default());
                    match buckets.claim_owner(&k, value).await {
                        Ok(epoch) => {
                            metrics::counter!(CLAIMS, "outcome" => "won").increment(1);
                            return Ok(Owned {
                                node: record.node.clone(),
                                epoch,
                            });
                        }
                        Err(EngineError::Conflict) => {
                            metrics::counter!(CLAIMS, "outcome" => "conflict").increment(1);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(EngineError::Unreachable(
                    "the owner record keeps changing".into(),
                ))
            })
            .await
            .map_err(unavailable)?
            .map_err(|e| unavailable(format_args!("{e}")))?;
        {
            let mut owners = self.inner.owners.write();
            // Bounded: past the cap the cache starts again (records stay in
            // the engine; a miss costs one read).
            if owners.len() >= OWNER_CACHE {
                owners.clear();
            }
            owners.insert(key, owned.clone());
        }
        self.classify(&owned)
    }

    /// A node that has left (`leave`) owns nothing but still passes its
    /// remaining requests on: to the recorded owner when that is another
    /// live node, else to the first live candidate of the ring without this
    /// node, which takes the object over (this node's membership is gone).
    async fn route_away(
        &self,
        address: &ObjectAddress,
        hint: Option<&str>,
    ) -> Result<Placed, InvokeError> {
        if !self.inner.health.lock().withdrawn {
            return Err(unavailable("this node is handing its objects over"));
        }
        let me = self.inner.me.id.clone();
        let key = owner_key(address);
        let mut cached = self.inner.owners.read().get(&key).cloned();
        if cached.is_none() {
            // The record names the owner (after a "moved" answer the cache is
            // empty): another live node's record is followed.
            if let Ok(buckets) = self.buckets() {
                let k = key.clone();
                if let Ok(Ok(Some((value, epoch)))) =
                    self.run(async move { buckets.owner(&k).await }).await
                {
                    if let Ok(r) = serde_json::from_slice::<OwnerRecord>(&value) {
                        cached = Some(Owned {
                            node: r.node,
                            epoch,
                        });
                    }
                }
            }
        }
        if let Some(o) = cached.as_ref().filter(|o| o.node != me) {
            if let Some(peer) = self.live_peer(&o.node) {
                return Ok(Placed::Remote {
                    node: o.node.clone(),
                    peer,
                    epoch: o.epoch,
                });
            }
        }
        let others: BTreeMap<String, String> = self
            .placement()
            .members()
            .iter()
            .filter(|(n, _)| **n != me)
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let ring = Placement::new(others, self.inner.config.vnodes);
        let node = ring
            .first(placement_digest(address), hint)
            .map(str::to_owned)
            .ok_or_else(|| {
                unavailable("this node has left the cluster and no other node is live")
            })?;
        let peer = self
            .live_peer(&node)
            .ok_or_else(|| unavailable(format_args!("node {node} is down")))?;
        Ok(Placed::Remote {
            node,
            peer,
            epoch: cached.map(|o| o.epoch).unwrap_or(0),
        })
    }

    /// Whether this node has left (or is leaving) the cluster: it serves no
    /// object, but passes requests on to the nodes that do.
    pub fn leaving(&self) -> bool {
        self.inner.health.lock().leaving
    }

    /// Whether a call from this node may wait for a failed owner to be
    /// replaced: not while it is fenced off, unless it fenced itself to leave.
    pub fn may_wait_for_owner(&self) -> bool {
        let h = self.inner.health.lock();
        !h.fenced || h.leaving
    }

    /// Forgets the cached owner of `address` (after a "moved" answer).
    pub fn forget_owner(&self, address: &ObjectAddress) {
        self.inner.owners.write().remove(&owner_key(address));
    }

    /// Sends one event to the node that owns `address`.
    pub async fn call(
        &self,
        node: &str,
        peer: &str,
        address: &ObjectAddress,
        epoch: u64,
        request_id: u64,
        request: InvokeRequest,
    ) -> Result<Outcome, InvokeError> {
        let client = self.inner.peers.clone();
        let (peer_owned, address_owned) = (peer.to_owned(), address.clone());
        let started = Instant::now();
        let mut task = self.inner.peer_handle.spawn(async move {
            client
                .call(&peer_owned, &address_owned, epoch, request_id, request)
                .await
        });
        // An owner that leaves the ring while the call is in flight (its lease
        // ran out: it is dead or paused, and the object may be taken over)
        // does not hold the caller until the peer timeout. The event may have
        // run there, so the outcome is unknown: `Lost`, never retried.
        let left = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.live_peer(node).is_none() {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            joined = &mut task => joined.map_err(unavailable)?,
            () = left => {
                task.abort();
                Outcome::Lost(format!("owner node {node} left the cluster while the call was in flight"))
            }
        };
        let label = match &outcome {
            Outcome::Answered(Ok(_)) => "ok",
            Outcome::Answered(Err(_)) => "error",
            Outcome::Moved { .. } => "moved",
            Outcome::NotDelivered(_) => "not_delivered",
            Outcome::Lost(_) => "lost",
            Outcome::Refused(_) => "refused",
        };
        metrics::counter!(REMOTE_CALLS, "outcome" => label).increment(1);
        metrics::histogram!(REMOTE_SECONDS).record(started.elapsed().as_secs_f64());
        if let Outcome::NotDelivered(why) | Outcome::Lost(why) | Outcome::Refused(why) = &outcome {
            tracing::warn!(owner = node, error = %why, "remote call failed");
        }
        Ok(outcome)
    }

    /// `true` for exactly one node of the cluster per `key` (cron minutes);
    /// `false` also when the engine cannot be asked (at most once).
    pub async fn claim_once(&self, key: String) -> bool {
        let Ok(b) = self.buckets() else {
            return false;
        };
        matches!(
            self.run(async move { b.claim_once(&key).await }).await,
            Ok(Ok(true))
        )
    }

    /// Whether the engine's buckets are open and its connection is up.
    pub fn engine_connected(&self) -> bool {
        self.inner.buckets.read().is_some() && self.inner.engine.connected()
    }

    /// Live members, as the ring has them.
    pub fn live_members(&self) -> usize {
        self.inner.members.read().placement.members().len()
    }

    /// Members, ring and health, for `GET /v1/cluster`.
    pub fn status(&self) -> serde_json::Value {
        let m = self.inner.members.read();
        let h = self.inner.health.lock();
        let shares = m.placement.shares(4096);
        let my_kv = *self.inner.kv.lock();
        let members: Vec<serde_json::Value> = m
            .placement
            .members()
            .keys()
            .filter_map(|id| m.seen.get(id))
            .map(|(info, at)| {
                serde_json::json!({
                    "id": info.id,
                    "region": info.region,
                    "peer": info.peer,
                    "data": info.data,
                    "control": info.control,
                    "last_seen_ms": at.elapsed().as_millis() as u64,
                    "ring_share": shares.get(&info.id).copied().unwrap_or(0) as f64 / 4096.0,
                    "kv": if info.id == self.inner.me.id { Some(my_kv) } else { info.kv },
                })
            })
            .collect();
        serde_json::json!({
            "node": self.inner.me.id,
            "region": self.inner.me.region,
            "engine": if self.engine_connected() { "connected" } else { "unreachable" },
            "fenced": h.fenced,
            "lease_ms": self.inner.lease.as_millis() as u64,
            "last_renewal_ms": h.last_ack.map(|t| t.elapsed().as_millis() as u64),
            "ring": { "vnodes": self.inner.config.vnodes, "changes": h.ring_changes },
            "kv": my_kv,
            "members": members,
        })
    }
}
