//! `DurableObjectDirectory`: object id → live actor, activating objects on
//! demand so that there is exactly one live actor per object on this node.
//!
//! Who owns an id is decided by [`DurableObjectDirectory::owner`] alone: on a
//! standalone node every object is local; in a cluster it asks the engine's
//! ownership record (`cluster::Cluster::locate`), and [`DirectoryHandle`] sends
//! events for objects owned elsewhere to their owner as remote actor messages.
//! A fenced node (its membership lease lapsed) serves no object events and
//! drops its live objects.
//!
//! An object runs the worker version that was live when it was activated; after
//! a redeploy it is stopped as soon as it is idle (checked every second), and its
//! next event activates it with the new version.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures::channel::oneshot;

use super::durable_object::{
    AlarmChanged, DurableObjectActor, Evict, HandOver, Kill, ObjectInvoke, ObjectStopped,
};
use super::pool::{IsolateThreads, SpawnObject};
use super::registry::WorkersView;
use crate::cluster::peer::Outcome;
use crate::cluster::{Cluster, Placed};
use crate::js::durable::{DurableObjectBackend, ObjectAddress, ObjectFuture};
use crate::js::hibernation::ObjectSockets;
use crate::js::{InvokeError, InvokeRequest};
use crate::state;
use crate::state::alarms::AlarmIndex;

const ACTIVATIONS: &str = "edged_do_activations_total";
const DAMAGED: &str = "edged_do_damaged_total";
/// What events of a damaged object get.
const DAMAGED_REFUSAL: &str = "Durable Object storage is damaged: the object refuses events until an operator resets it (DELETE /v1/workers/{name}/objects/{class}/{id})";
const ALARM_RUNS: &str = "edged_do_alarm_runs_total";
const ALARM_RETRIES: &str = "edged_do_alarm_retries_total";
/// Retries of a throwing alarm handler, with backoff 1 s, 2 s, 4 s, … .
const ALARM_MAX_RETRIES: u32 = 6;
/// How long before its time an orphaned alarm's object is taken over.
const ORPHAN_AHEAD_MS: u64 = 2_000;
/// How often due alarms are looked for; an alarm never runs before its time.
const ALARM_TICK: std::time::Duration = std::time::Duration::from_millis(50);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An alarm handler run ended.
#[derive(Message)]
#[rtype(result = "()")]
struct AlarmFinished {
    address: ObjectAddress,
    retry: u32,
    ok: bool,
}

type Located = Result<Addr<DurableObjectActor>, InvokeError>;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    Local,
    /// Another node of the cluster: its id, peer address and owner epoch.
    Remote {
        node: String,
        peer: String,
        epoch: u64,
    },
}

/// Find (or activate) the actor of an object.
#[derive(Message)]
#[rtype(result = "Result<Addr<DurableObjectActor>, InvokeError>")]
pub struct Locate(pub ObjectAddress);

#[derive(Message)]
#[rtype(result = "()")]
struct Activated {
    address: ObjectAddress,
    activation: u64,
    result: Result<Addr<DurableObjectActor>, InvokeError>,
}

/// Node-wide bounds on objects.
#[derive(Debug, Clone, Copy)]
pub struct ObjectLimits {
    /// Live objects at most; past it the least recently used idle ones go.
    pub max_live: usize,
    /// Bytes one object's database may hold.
    pub max_object_bytes: u64,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            max_live: 2_000,
            max_object_bytes: 10 << 30,
        }
    }
}

struct LiveObject {
    activation: u64,
    /// The worker version the object runs.
    version: u64,
    addr: Addr<DurableObjectActor>,
    last_used: Arc<AtomicU64>,
}

pub struct DurableObjectDirectory {
    view: WorkersView,
    threads: IsolateThreads,
    data_dir: PathBuf,
    hibernate_after: std::time::Duration,
    max_queue: usize,
    limits: ObjectLimits,
    live: HashMap<ObjectAddress, LiveObject>,
    activating: HashMap<ObjectAddress, Vec<oneshot::Sender<Located>>>,
    /// Last-use clocks and worker versions of activations in progress, by
    /// activation number.
    last_used: HashMap<u64, (Arc<AtomicU64>, u64)>,
    next_activation: u64,
    /// The per-node alarm index (None if it could not be opened: alarms then
    /// live only in memory and the error is logged).
    alarm_index: Option<AlarmIndex>,
    /// Alarms not yet run: address → (time in ms, retry count).
    alarms: HashMap<ObjectAddress, (u64, u32)>,
    /// Set in a cluster: while the node is fenced, alarms wait.
    cluster: Option<Cluster>,
    /// Objects' hibernatable WebSockets, kept across activations (an entry
    /// goes when its object stops holding none).
    sockets: HashMap<ObjectAddress, Arc<ObjectSockets>>,
    /// Hibernatable WebSockets one object may hold.
    socket_cap: usize,
    /// The node is handing its objects over ([`HandOverAll`]): none starts.
    handing_over: bool,
    /// Objects whose orphaned alarm this node is taking over now (or failed
    /// to, lately): not tried again before the time.
    waking: HashMap<ObjectAddress, std::time::Instant>,
}

/// Hibernatable WebSockets per object unless configured (Workers' limit).
pub const DEFAULT_OBJECT_SOCKETS: usize = 32_768;

impl DurableObjectDirectory {
    pub fn new(
        view: WorkersView,
        threads: IsolateThreads,
        data_dir: PathBuf,
        hibernate_after: std::time::Duration,
        max_queue: usize,
    ) -> Self {
        DurableObjectDirectory {
            view,
            threads,
            data_dir,
            hibernate_after,
            max_queue,
            limits: ObjectLimits::default(),
            live: HashMap::new(),
            activating: HashMap::new(),
            last_used: HashMap::new(),
            next_activation: 1,
            alarm_index: None,
            alarms: HashMap::new(),
            cluster: None,
            sockets: HashMap::new(),
            socket_cap: DEFAULT_OBJECT_SOCKETS,
            handing_over: false,
            waking: Default::default(),
        }
    }

    /// Hibernatable WebSockets one object may hold.
    pub fn with_socket_cap(mut self, cap: usize) -> Self {
        self.socket_cap = cap;
        self
    }

    /// The object's hibernatable sockets: the set it had, or a new one whose
    /// events go to the object on this node (reconstructing it if it
    /// hibernated).
    fn sockets_of(&mut self, address: &ObjectAddress, ctx: &Context<Self>) -> Arc<ObjectSockets> {
        if let Some(s) = self.sockets.get(address) {
            return s.clone();
        }
        let handle = handle(ctx.address(), None);
        let target = address.clone();
        let deliver: crate::js::hibernation::Deliver =
            Arc::new(move |request| Box::pin(handle.invoke_local(target.clone(), 0, request)));
        let set = ObjectSockets::new(deliver, self.socket_cap);
        self.sockets.insert(address.clone(), set.clone());
        set
    }

    /// This node is one of a cluster's.
    pub fn with_cluster(mut self, cluster: Option<Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The node's object index, opened (and checked) by the caller.
    pub fn with_index(mut self, index: AlarmIndex) -> Self {
        self.alarm_index = Some(index);
        self
    }

    pub fn with_limits(mut self, limits: ObjectLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Past `max_live`, asks the least recently used objects to stop if idle
    /// (busy ones refuse and are asked again at the next activation).
    fn evict_over_cap(&mut self, keep: &ObjectAddress) {
        let over = self.live.len().saturating_sub(self.limits.max_live);
        if over == 0 {
            return;
        }
        let mut by_use: Vec<(u64, &ObjectAddress)> = self
            .live
            .iter()
            .filter(|(a, _)| *a != keep)
            .map(|(a, o)| (o.last_used.load(Ordering::Relaxed), a))
            .collect();
        by_use.sort_unstable_by_key(|(t, _)| *t);
        for (_, address) in by_use.into_iter().take(over) {
            if let Some(o) = self.live.get(address) {
                o.addr.do_send(Evict);
            }
        }
    }

    /// Objects still running a worker version that is no longer live are asked
    /// to stop when idle, so their next event runs the new code (as a deploy
    /// restarts Durable Objects in Workers).
    fn retire_outdated(&mut self) {
        let published = self.view.current();
        for (address, o) in &self.live {
            let current = published.workers.get(&address.worker).map(|d| d.version());
            if current != Some(o.version) {
                o.addr.do_send(Evict);
            }
        }
    }

    /// The one place that decides which node owns an object: this node when
    /// standalone; in a cluster, the owner recorded in the engine (placing a
    /// new object on its first live ring candidate, in the hinted region when
    /// it has live nodes). `refresh` re-reads the record instead of the
    /// cached one.
    pub async fn owner(
        cluster: Option<&Cluster>,
        address: &ObjectAddress,
        hint: Option<&str>,
        refresh: bool,
    ) -> Result<Owner, InvokeError> {
        let Some(cluster) = cluster else {
            return Ok(Owner::Local);
        };
        Ok(match cluster.locate(address, hint, refresh).await? {
            Placed::Local { .. } => Owner::Local,
            Placed::Remote { node, peer, epoch } => Owner::Remote { node, peer, epoch },
        })
    }

    fn activate(&mut self, address: ObjectAddress, ctx: &mut Context<Self>) {
        // The deployment must still be the one the address was made for: a
        // worker deleted and deployed again under the same name has another
        // storage id, and the old objects are gone with the old worker.
        let deployment = self
            .view
            .get(&address.worker)
            .filter(|d| d.script.storage == address.storage);
        let database = state::names::object_db(
            &self.data_dir,
            &address.storage,
            &address.class_name,
            &address.id,
        );
        let (deployment, database) = match (deployment, database) {
            (Some(d), Ok(path)) => (d, path),
            (None, _) => {
                return self.fail_activation(
                    &address,
                    InvokeError::Unavailable(format!(
                        "worker '{}' is not deployed",
                        address.worker
                    )),
                )
            }
            (_, Err(e)) => {
                return self.fail_activation(&address, InvokeError::Unavailable(e.to_string()))
            }
        };
        // Damaged objects refuse events until an operator resets them.
        let known = match self.alarm_index.as_ref().map(|i| i.object(&address)) {
            Some(Ok(Some(true))) => {
                return self
                    .fail_activation(&address, InvokeError::Unavailable(DAMAGED_REFUSAL.into()))
            }
            Some(Ok(Some(false))) => true,
            _ => false,
        };
        let activation = self.next_activation;
        self.next_activation += 1;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        address.id.hash(&mut h);
        let pool = self.threads.pool(h.finish() as usize).clone();
        let last_used = Arc::new(AtomicU64::new(super::durable_object::epoch_ms()));
        self.last_used
            .insert(activation, (last_used.clone(), deployment.script.version));
        let sockets = self.sockets_of(&address, ctx);
        let msg = SpawnObject {
            sockets,
            script: deployment.script.clone(),
            address: address.clone(),
            activation,
            database,
            known,
            hibernate_after: self.hibernate_after,
            max_queue: self.max_queue,
            max_object_bytes: self.limits.max_object_bytes,
            last_used,
            directory: ctx.address().recipient(),
            alarms: ctx.address().recipient(),
            replica: None,
        };
        let me = ctx.address();
        let cluster = self.cluster.clone();
        actix::spawn(async move {
            let mut msg = msg;
            // In a cluster the object's log is the truth: its database is
            // brought up to the log (the local file may be stale or absent)
            // and this owner's epoch is appended before it runs.
            if let Some(cluster) = cluster {
                match cluster
                    .begin_object(&msg.address, msg.database.clone())
                    .await
                {
                    Ok(replica) => {
                        msg.known = false;
                        msg.replica = Some(replica);
                    }
                    Err(e) => {
                        me.do_send(Activated {
                            address,
                            activation,
                            result: Err(e),
                        });
                        return;
                    }
                }
            }
            let result = match pool.send(msg).await {
                Ok(r) => r,
                Err(e) => Err(InvokeError::Unavailable(e.to_string())),
            };
            me.do_send(Activated {
                address,
                activation,
                result,
            });
        });
        metrics::counter!(ACTIVATIONS).increment(1);
    }
}

impl DurableObjectDirectory {
    fn fail_activation(&mut self, address: &ObjectAddress, err: InvokeError) {
        for w in self.activating.remove(address).unwrap_or_default() {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Runs every alarm that is due, each in its object as an event.
    fn fire_due_alarms(&mut self, ctx: &mut Context<Self>) {
        if self.cluster.as_ref().is_some_and(|c| c.fenced()) {
            return;
        }
        let now = now_ms();
        let due: Vec<(ObjectAddress, u32)> = self
            .alarms
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(a, (_, retry))| (a.clone(), *retry))
            .collect();
        for (address, retry) in due {
            self.alarms.remove(&address);
            metrics::counter!(ALARM_RUNS).increment(1);
            let me = ctx.address();
            actix::spawn(async move {
                let request = InvokeRequest {
                    cf: None,
                    depth: 0,
                    entrypoint: None,
                    props: None,
                    cancel: Default::default(),
                    method: "ALARM".into(),
                    url: format!("alarm:{retry}"),
                    headers: Vec::new(),
                    body: None,
                };
                let mut ok = false;
                // An object caught hibernating never started the alarm: locate
                // it again rather than count a retry.
                for _ in 0..2 {
                    let outcome = match me.send(Locate(address.clone())).await {
                        Ok(Ok(object)) => object
                            .send(ObjectInvoke {
                                request_id: 0,
                                request: request.clone(),
                            })
                            .await
                            .ok(),
                        _ => None,
                    };
                    match outcome {
                        Some(Err(InvokeError::Stopping)) | None => continue,
                        Some(result) => {
                            ok = result.is_ok();
                            break;
                        }
                    }
                }
                me.do_send(AlarmFinished { address, retry, ok });
            });
        }
    }

    /// In a cluster: objects whose alarm is due and whose owner is gone,
    /// that this node is the one to take, are taken over and activated here
    /// (which schedules the alarm from their database) — as a call would,
    /// had anyone called them (`cluster/alarms.rs`).
    fn wake_orphaned_alarms(&mut self, ctx: &mut Context<Self>) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        if self.handing_over {
            return;
        }
        let now = std::time::Instant::now();
        self.waking.retain(|_, until| *until > now);
        for address in cluster.orphaned_alarms(now_ms(), ORPHAN_AHEAD_MS) {
            if self.waking.contains_key(&address) {
                continue;
            }
            // A worker this node does not run (yet, or any more: a deleted
            // worker's entries go with its storage) is left alone.
            let deployed = self
                .view
                .get(&address.worker)
                .is_some_and(|d| d.script.storage == address.storage);
            if !deployed {
                continue;
            }
            if self.live.contains_key(&address) {
                self.republish_alarm(&cluster, &address);
                continue;
            }
            // Until it is done, and for a while after a failure.
            self.waking
                .insert(address.clone(), now + std::time::Duration::from_secs(60));
            let me = ctx.address();
            let cluster = cluster.clone();
            actix::spawn(async move {
                let owner =
                    DurableObjectDirectory::owner(Some(&cluster), &address, None, true).await;
                let woke = match owner {
                    Ok(Owner::Local) => matches!(me.send(Locate(address.clone())).await, Ok(Ok(_))),
                    _ => false,
                };
                if woke {
                    tracing::info!(object = %address.id, "took over an idle object whose owner is gone, for its alarm");
                }
                me.do_send(Woken { address, woke });
            });
        }
    }

    /// Records in the engine the alarm this node holds for a live object
    /// (or that it holds none): the entry then names this node.
    fn republish_alarm(&self, cluster: &Cluster, address: &ObjectAddress) {
        let at = self.alarms.get(address).map(|(at, _)| *at);
        cluster.publish_alarm(address, at);
    }

    fn record_alarm(&mut self, address: &ObjectAddress, at_ms: Option<u64>) {
        if let Some(index) = &self.alarm_index {
            if let Err(e) = index.set(address, at_ms) {
                tracing::error!(object = %address.id, error = %e, "cannot record the alarm");
            }
        }
    }
}

impl Actor for DurableObjectDirectory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.alarm_index.is_none() {
            match AlarmIndex::open(&state::names::objects_dir(&self.data_dir)) {
                Ok(index) => self.alarm_index = Some(index),
                Err(e) => tracing::error!(error = %e, "cannot open the alarm index"),
            }
        }
        if let Some(index) = &self.alarm_index {
            match index.all() {
                Ok(all) => {
                    for (address, at, retry) in all {
                        self.alarms.insert(address, (at, retry));
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the alarm index"),
            }
        }
        ctx.run_interval(ALARM_TICK, |act, ctx| act.fire_due_alarms(ctx));
        ctx.run_interval(std::time::Duration::from_secs(1), |act, ctx| {
            act.wake_orphaned_alarms(ctx);
            act.retire_outdated();
            // Socket sets whose last socket closed while the object hibernated.
            let (live, activating) = (&act.live, &act.activating);
            act.sockets.retain(|address, set| {
                !set.is_empty() || live.contains_key(address) || activating.contains_key(address)
            });
        });
    }
}

impl Handler<AlarmChanged> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: AlarmChanged, _: &mut Self::Context) {
        self.record_alarm(&msg.address, msg.at_ms);
        // In a cluster every node knows where alarms are due, so that one
        // fires even if this owner dies with the object idle.
        if let (Some(cluster), false) = (&self.cluster, msg.recorded) {
            cluster.publish_alarm(&msg.address, msg.at_ms);
        }
        match msg.at_ms {
            Some(at) => {
                self.alarms.insert(msg.address, (at, 0));
            }
            None => {
                self.alarms.remove(&msg.address);
            }
        }
    }
}

/// An orphaned alarm's object was taken over here (or could not be).
#[derive(Message)]
#[rtype(result = "()")]
struct Woken {
    address: ObjectAddress,
    woke: bool,
}

impl Handler<Woken> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: Woken, _: &mut Self::Context) {
        if !msg.woke {
            // Tried again in a few seconds, not every second.
            self.waking.insert(
                msg.address,
                std::time::Instant::now() + std::time::Duration::from_secs(5),
            );
            return;
        }
        self.waking.remove(&msg.address);
        if let Some(cluster) = &self.cluster {
            // The activation read the alarm from the object's database: the
            // entry now names this node (or goes, if the alarm did).
            self.republish_alarm(cluster, &msg.address);
        }
    }
}

impl Handler<AlarmFinished> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: AlarmFinished, ctx: &mut Self::Context) {
        if msg.ok || self.alarms.contains_key(&msg.address) {
            // Done (the object cleared its alarm), or the handler set a new one.
            return;
        }
        if msg.retry < ALARM_MAX_RETRIES {
            metrics::counter!(ALARM_RETRIES).increment(1);
            let backoff = 1000u64 << msg.retry;
            let at = now_ms() + backoff;
            // The backoff resumes where it was after a restart.
            if let Some(index) = &self.alarm_index {
                if let Err(e) = index.set_retry(&msg.address, Some(at), msg.retry + 1) {
                    tracing::error!(object = %msg.address.id, error = %e, "cannot record the alarm retry");
                }
            }
            self.alarms.insert(msg.address, (at, msg.retry + 1));
        } else {
            tracing::warn!(object = %msg.address.id, "alarm handler failed {ALARM_MAX_RETRIES} retries; dropped");
            self.record_alarm(&msg.address, None);
            // The object's own storage forgets it too (getAlarm() → null).
            let me = ctx.address();
            let address = msg.address;
            actix::spawn(async move {
                if let Ok(Ok(object)) = me.send(Locate(address)).await {
                    let _ = object
                        .send(ObjectInvoke {
                            request_id: 0,
                            request: InvokeRequest {
                                cf: None,
                                method: "ALARM".into(),
                                url: "alarm:drop".into(),
                                headers: Vec::new(),
                                body: None,
                                depth: 0,
                                entrypoint: None,
                                props: None,
                                cancel: Default::default(),
                            },
                        })
                        .await;
                }
            });
        }
    }
}

impl Handler<Locate> for DurableObjectDirectory {
    type Result = ResponseFuture<Result<Addr<DurableObjectActor>, InvokeError>>;

    fn handle(&mut self, msg: Locate, ctx: &mut Self::Context) -> Self::Result {
        let address = msg.0;
        // Events already past the ownership check when the node fenced itself
        // do not bring objects back.
        if self.cluster.as_ref().is_some_and(|c| c.fenced()) {
            return Box::pin(async {
                Err(InvokeError::Cluster(
                    "Durable Object unavailable: this node is fenced off the cluster (retryable)"
                        .into(),
                ))
            });
        }
        if let Some(o) = self.live.get(&address) {
            if o.addr.connected() {
                let addr = o.addr.clone();
                return Box::pin(async move { Ok(addr) });
            }
            self.live.remove(&address);
        }
        // Handing over: no object starts here any more.
        if self.handing_over {
            return Box::pin(async {
                Err(InvokeError::Cluster(
                    super::durable_object::HANDING_OVER.into(),
                ))
            });
        }
        let (tx, rx) = oneshot::channel();
        let first = !self.activating.contains_key(&address);
        self.activating.entry(address.clone()).or_default().push(tx);
        if first {
            self.activate(address, ctx);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(InvokeError::Unavailable("directory stopped".into())))
        })
    }
}

impl Handler<Activated> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: Activated, _: &mut Self::Context) {
        if let Some(index) = &self.alarm_index {
            let outcome = match &msg.result {
                Ok(_) => index.record_object(&msg.address),
                Err(InvokeError::Unavailable(m))
                    if m.starts_with("Durable Object storage is damaged") =>
                {
                    tracing::error!(object = %msg.address.id, class = %msg.address.class_name, "{m}; the object refuses events until an operator resets it");
                    metrics::counter!(DAMAGED).increment(1);
                    index.mark_damaged(&msg.address)
                }
                Err(_) => Ok(()),
            };
            if let Err(e) = outcome {
                tracing::error!(object = %msg.address.id, error = %e, "cannot update the object index");
            }
        }
        let last_used = self.last_used.remove(&msg.activation);
        if let (Ok(addr), Some((last_used, version))) = (&msg.result, last_used) {
            self.live.insert(
                msg.address.clone(),
                LiveObject {
                    activation: msg.activation,
                    version,
                    addr: addr.clone(),
                    last_used,
                },
            );
            self.evict_over_cap(&msg.address);
            if self.handing_over {
                addr.do_send(HandOver);
            }
        }
        for w in self.activating.remove(&msg.address).unwrap_or_default() {
            let _ = w.send(msg.result.clone());
        }
    }
}

/// A worker was deleted: its live objects stop now (events in flight fail),
/// and unless its storage is kept, its alarms and databases are removed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerGone {
    pub storage: String,
    pub keep: bool,
}

impl Handler<WorkerGone> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: WorkerGone, _: &mut Self::Context) {
        for (address, o) in &self.live {
            if address.storage == msg.storage {
                o.addr.do_send(Kill("the worker was deleted".into()));
            }
        }
        self.sockets.retain(|address, set| {
            let keep = address.storage != msg.storage;
            if !keep {
                set.close_all(1001, "the worker was deleted");
            }
            keep
        });
        if msg.keep {
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.forget_storage(&msg.storage);
        }
        self.alarms.retain(|a, _| a.storage != msg.storage);
        if let Some(index) = &self.alarm_index {
            if let Err(e) = index.purge_storage(&msg.storage) {
                tracing::error!(error = %e, "cannot forget a deleted worker's alarms");
            }
        }
        match state::names::worker_objects_dir(&self.data_dir, &msg.storage) {
            Ok(dir) => {
                // Open databases are unlinked under their actors, which are
                // stopping: nothing can reopen them (the storage id is gone).
                actix::spawn(async move {
                    let removed =
                        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                            _ => Ok(()),
                        })
                        .await;
                    if let Ok(Err(e)) = removed {
                        tracing::error!(error = %e, "cannot remove a deleted worker's Durable Object storage");
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "bad storage id in a delete"),
        }
    }
}

/// An operator resets an object (after damage, accepting the loss): it stops,
/// its database goes, and its next event starts it empty.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ForgetObject(pub ObjectAddress);

impl Handler<ForgetObject> for DurableObjectDirectory {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: ForgetObject, _: &mut Self::Context) -> Self::Result {
        let address = msg.0;
        if let Some(o) = self.live.remove(&address) {
            o.addr
                .do_send(Kill("the object was reset by an operator".into()));
        }
        if let Some(set) = self.sockets.remove(&address) {
            set.close_all(1001, "the object was reset by an operator");
        }
        self.alarms.remove(&address);
        if let Some(index) = &self.alarm_index {
            index.forget_object(&address).map_err(|e| e.to_string())?;
        }
        let path = state::names::object_db(
            &self.data_dir,
            &address.storage,
            &address.class_name,
            &address.id,
        )
        .map_err(|e| e.to_string())?;
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
                _ => {}
            }
        }
        tracing::warn!(object = %address.id, class = %address.class_name, "object reset by an operator; it starts empty");
        Ok(())
    }
}

impl Handler<ObjectStopped> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, msg: ObjectStopped, _: &mut Self::Context) {
        if self
            .live
            .get(&msg.address)
            .is_some_and(|o| o.activation == msg.activation)
        {
            self.live.remove(&msg.address);
            if self.sockets.get(&msg.address).is_some_and(|s| s.is_empty()) {
                self.sockets.remove(&msg.address);
            }
        }
    }
}

/// The node is about to leave the cluster (SIGTERM, a rolling restart): no
/// object starts here any more, and every live one finishes the events it
/// started, makes their writes durable and stops ([`HandOver`]), so that no
/// caller sees an event fail; answers when all have, or after `within`
/// (what is still running then fails when the node fences itself).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct HandOverAll {
    pub within: std::time::Duration,
}

impl Handler<HandOverAll> for DurableObjectDirectory {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: HandOverAll, _: &mut Self::Context) -> Self::Result {
        self.handing_over = true;
        let stops: Vec<_> = self.live.values().map(|o| o.addr.send(HandOver)).collect();
        let count = stops.len();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let done = tokio::time::timeout(msg.within, futures::future::join_all(stops))
                .await
                .is_ok();
            tracing::info!(
                objects = count,
                ms = started.elapsed().as_millis() as u64,
                complete = done,
                "objects handed over"
            );
            count
        })
    }
}

/// The node fenced itself: every live object stops (events in flight fail).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FenceAll;

impl Handler<FenceAll> for DurableObjectDirectory {
    type Result = ();

    fn handle(&mut self, _: FenceAll, _: &mut Self::Context) {
        for (_, o) in self.live.drain() {
            o.addr.do_send(Kill(
                "this node fenced itself off the cluster (its membership lease lapsed)".into(),
            ));
        }
        // The objects may be served elsewhere now: their clients reconnect there.
        for (_, set) in self.sockets.drain() {
            set.close_all(1012, "the Durable Object moved to another node");
        }
    }
}

/// The directory as the engine's [`DurableObjectBackend`]. It remembers where
/// live objects are, so a call to a live object goes straight to its actor
/// without a hop through the directory's mailbox; the directory is asked only
/// when the object is not known to be live.
pub struct DirectoryHandle {
    directory: Addr<DurableObjectDirectory>,
    known: Arc<parking_lot::RwLock<HashMap<ObjectAddress, Addr<DurableObjectActor>>>>,
    cluster: Option<Cluster>,
}

/// Entries the handle remembers before it forgets the stopped ones.
const KNOWN_CAPACITY: usize = 100_000;

impl DurableObjectBackend for DirectoryHandle {
    fn invoke(
        &self,
        target: ObjectAddress,
        request_id: u64,
        request: InvokeRequest,
    ) -> ObjectFuture {
        self.invoke_hinted(target, None, request_id, request)
    }

    fn invoke_hinted(
        &self,
        target: ObjectAddress,
        hint: Option<String>,
        request_id: u64,
        request: InvokeRequest,
    ) -> ObjectFuture {
        let Some(cluster) = self.cluster.clone() else {
            return Box::pin(self.invoke_local(target, request_id, request));
        };
        let local = self.local_parts();
        Box::pin(async move {
            // An owner that is down is taken over once its lease has run out
            // (`Cluster::locate`): until then calls wait and retry, within
            // FAILOVER_WAIT, instead of failing.
            let deadline = std::time::Instant::now() + FAILOVER_WAIT;
            let mut refresh = false;
            let mut moves = 0;
            loop {
                let retry = |e: InvokeError| {
                    let retryable =
                        matches!(&e, InvokeError::Cluster(m) if m.ends_with("(retryable)"));
                    if retryable
                        && cluster.may_wait_for_owner()
                        && std::time::Instant::now() < deadline
                    {
                        Ok(())
                    } else {
                        Err(e)
                    }
                };
                let owner = match DurableObjectDirectory::owner(
                    Some(&cluster),
                    &target,
                    hint.as_deref(),
                    refresh,
                )
                .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        retry(e)?;
                        tokio::time::sleep(FAILOVER_POLL).await;
                        refresh = true;
                        continue;
                    }
                };
                let (node, peer, epoch) = match owner {
                    Owner::Local => {
                        match invoke_local(
                            local.0.clone(),
                            local.1.clone(),
                            target.clone(),
                            request_id,
                            request.clone(),
                        )
                        .await
                        {
                            // Fenced or not yet begun here: the event never ran.
                            Err(e @ InvokeError::Cluster(_)) => {
                                retry(e)?;
                                tokio::time::sleep(FAILOVER_POLL).await;
                                refresh = true;
                                continue;
                            }
                            other => return other,
                        }
                    }
                    Owner::Remote { node, peer, epoch } => (node, peer, epoch),
                };
                match cluster
                    .call(&node, &peer, &target, epoch, request_id, request.clone())
                    .await?
                {
                    // The owner did not run it and says it may work soon (it
                    // is handing the object over, or fenced): try again.
                    Outcome::Answered(Err(e @ InvokeError::Cluster(_))) => {
                        retry(e)?;
                        cluster.forget_owner(&target);
                        tokio::time::sleep(FAILOVER_POLL).await;
                        refresh = true;
                    }
                    Outcome::Answered(result) => return result,
                    Outcome::Moved { node: to, epoch } => {
                        tracing::info!(object = %target.id, from = %node, to = %to, epoch, "object moved");
                        cluster.forget_owner(&target);
                        refresh = true;
                        moves += 1;
                        if moves > 3 {
                            // Views of the ring still settling (a node
                            // leaving): wait a little, within the deadline.
                            retry(InvokeError::Cluster(
                                "Durable Object unavailable: its owner keeps moving (retryable)"
                                    .into(),
                            ))?;
                            moves = 0;
                            tokio::time::sleep(FAILOVER_POLL).await;
                        }
                    }
                    Outcome::NotDelivered(why) => {
                        let e = InvokeError::Cluster(format!(
                            "Durable Object unavailable: owner node {node} is down ({why}) (retryable)"
                        ));
                        retry(e)?;
                        cluster.forget_owner(&target);
                        tokio::time::sleep(FAILOVER_POLL).await;
                        refresh = true;
                    }
                    // The event may have run: not marked retryable.
                    Outcome::Lost(why) => {
                        return Err(InvokeError::Cluster(format!(
                            "Durable Object unavailable: owner node {node} did not answer: {why}"
                        )))
                    }
                    Outcome::Refused(why) => {
                        return Err(InvokeError::Cluster(format!(
                            "Durable Object unavailable: owner node {node} refused the call ({why}); are the cluster secrets the same?"
                        )))
                    }
                }
            }
        })
    }
}

/// How long a call waits for a failed owner to be replaced before it fails.
const FAILOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const FAILOVER_POLL: std::time::Duration = std::time::Duration::from_millis(150);

type Known = Arc<parking_lot::RwLock<HashMap<ObjectAddress, Addr<DurableObjectActor>>>>;

impl DirectoryHandle {
    fn local_parts(&self) -> (Addr<DurableObjectDirectory>, Known) {
        (self.directory.clone(), self.known.clone())
    }

    /// Delivers an event to the object's actor on this node (the caller has
    /// decided this node owns it).
    pub fn invoke_local(
        &self,
        target: ObjectAddress,
        request_id: u64,
        request: InvokeRequest,
    ) -> impl std::future::Future<Output = Result<crate::js::InvokeResponse, InvokeError>> + Send + 'static
    {
        invoke_local(
            self.directory.clone(),
            self.known.clone(),
            target,
            request_id,
            request,
        )
    }
}

async fn invoke_local(
    directory: Addr<DurableObjectDirectory>,
    known: Known,
    target: ObjectAddress,
    request_id: u64,
    request: InvokeRequest,
) -> Result<crate::js::InvokeResponse, InvokeError> {
    // An object that hibernated between locate and send is activated again.
    for attempt in 0..2 {
        let cached = known.read().get(&target).filter(|a| a.connected()).cloned();
        let addr = match cached {
            Some(addr) => addr,
            None => {
                let addr = directory
                    .send(Locate(target.clone()))
                    .await
                    .map_err(|e| InvokeError::Unavailable(e.to_string()))??;
                let mut k = known.write();
                if k.len() >= KNOWN_CAPACITY {
                    k.retain(|_, a| a.connected());
                }
                k.insert(target.clone(), addr.clone());
                addr
            }
        };
        match addr
            .send(ObjectInvoke {
                request_id,
                request: request.clone(),
            })
            .await
        {
            // The actor was stopping and never started the event.
            Ok(Err(InvokeError::Stopping)) if attempt == 0 => {
                known.write().remove(&target);
                continue;
            }
            Ok(outcome) => return outcome,
            Err(_) if attempt == 0 => {
                known.write().remove(&target);
                continue;
            }
            Err(e) => return Err(InvokeError::Unavailable(e.to_string())),
        }
    }
    Err(InvokeError::Unavailable("object unavailable".into()))
}

/// The directory's handle (the node's [`DurableObjectBackend`]).
pub fn handle(
    directory: Addr<DurableObjectDirectory>,
    cluster: Option<Cluster>,
) -> Arc<DirectoryHandle> {
    Arc::new(DirectoryHandle {
        directory,
        known: Arc::default(),
        cluster,
    })
}

/// Makes an `Arc<dyn DurableObjectBackend>` from the directory (standalone).
pub fn backend(directory: Addr<DurableObjectDirectory>) -> Arc<dyn DurableObjectBackend> {
    handle(directory, None)
}
