//! `IsolatePool`: blank, pre-bootstrapped isolates on one isolate thread.
//!
//! Design. V8 isolates are not `Send`, so isolates are created, bound and run on a
//! fixed set of isolate threads (actix arbiters, one per core by default). Each
//! thread has one pool actor holding `pool_size` blank isolates made from the
//! startup snapshot. A cold start ([`Spawn`]) takes a blank isolate (a *hit*; a
//! *miss* creates one on the spot), binds it to the worker version, starts an
//! [`IsolateActor`] for it on the same thread and then refills the pool one isolate
//! per message, so refilling never holds up the thread for long. A blank isolate
//! is handed out once and never comes back: isolates are not reused across tenants.
//!
//! Durable Objects ([`SpawnObject`]): the pool keeps one [`ObjectHost`] per worker
//! version on its thread (weakly: the objects' actors own it). The first object
//! of a version binds a blank isolate as the host; activations that arrive while
//! it binds wait for it; later ones only construct their instance in it.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::durable_object::{AlarmChanged, DurableObjectActor, ObjectSettings, ObjectStopped};
use super::isolate::{IsolateActor, IsolateControl, IsolateExited};
use super::object_host::ObjectHost;
use crate::js::durable::ObjectAddress;
use crate::js::{BindMode, InvokeError};
use crate::js::{BlankIsolate, EngineError, HostServices, IsolateLimits, WorkerScript};
use crate::state::durable::ObjectStore;

pub(crate) const POOL_HITS: &str = "edged_warm_pool_hits_total";
pub(crate) const POOL_MISSES: &str = "edged_warm_pool_misses_total";
pub(crate) const COLD_STARTS: &str = "edged_cold_starts_total";
pub(crate) const COLD_START_SECONDS: &str = "edged_cold_start_seconds";

/// Bind a new isolate to `script` on this pool's thread and start its actor.
#[derive(Message)]
#[rtype(result = "Result<Addr<IsolateActor>, EngineError>")]
pub struct Spawn {
    pub isolate_id: u64,
    pub script: Arc<WorkerScript>,
    pub control: Arc<IsolateControl>,
    pub supervisor: Option<Recipient<IsolateExited>>,
    /// This isolate's share of the thread's load ([`IsolateThreads::reserve`]),
    /// given back when it stops (or the spawn fails: the share is dropped).
    pub load: LoadShare,
}

/// Activate a Durable Object on this pool's thread: open its storage, construct
/// an instance of its class in the worker version's object host on this thread
/// (binding one from a blank isolate first if there is none), start its actor.
#[derive(Message)]
#[rtype(result = "Result<Addr<DurableObjectActor>, InvokeError>")]
pub struct SpawnObject {
    pub script: Arc<WorkerScript>,
    pub address: ObjectAddress,
    pub activation: u64,
    pub database: std::path::PathBuf,
    /// The node's index says the object exists: its database must be whole.
    pub known: bool,
    pub hibernate_after: std::time::Duration,
    pub max_queue: usize,
    pub max_object_bytes: u64,
    pub last_used: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub directory: Recipient<ObjectStopped>,
    pub alarms: Recipient<AlarmChanged>,
    /// In a cluster: the object's log (its database has just been brought up
    /// to it) and whether the log holds a base image.
    pub replica: Option<(std::sync::Arc<crate::cluster::replication::ObjectLog>, bool)>,
    /// The object's hibernatable WebSockets (kept by the directory across
    /// activations).
    pub sockets: std::sync::Arc<crate::js::hibernation::ObjectSockets>,
}

/// Create one blank isolate if the pool is below its target.
#[derive(Message)]
#[rtype(result = "()")]
struct Refill;

/// How many blank isolates the pool holds now.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PoolLevel;

/// Isolates running on one isolate thread (bound worker isolates and object
/// hosts), for placing new ones on the least loaded thread.
pub type ThreadLoad = Arc<std::sync::atomic::AtomicUsize>;

/// One share of a thread's load, given back when dropped.
pub struct LoadShare(ThreadLoad);

impl LoadShare {
    /// Counts one more isolate on the thread.
    pub fn take(load: &ThreadLoad) -> Self {
        load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LoadShare(load.clone())
    }
}

impl Drop for LoadShare {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct IsolatePool {
    blanks: VecDeque<BlankIsolate>,
    target: usize,
    limits: IsolateLimits,
    host: HostServices,
    /// Durable Object hosts on this thread, by worker name and version.
    hosts: Rc<std::cell::RefCell<std::collections::HashMap<HostKey, HostSlot>>>,
    load: ThreadLoad,
}

impl IsolatePool {
    pub fn new(target: usize, limits: IsolateLimits, host: HostServices, load: ThreadLoad) -> Self {
        IsolatePool {
            blanks: VecDeque::with_capacity(target),
            target,
            limits,
            host,
            hosts: Rc::default(),
            load,
        }
    }
}

impl Actor for IsolatePool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Refill);
    }
}

impl Handler<Refill> for IsolatePool {
    type Result = ();

    fn handle(&mut self, _: Refill, ctx: &mut Self::Context) {
        if self.blanks.len() >= self.target {
            return;
        }
        match BlankIsolate::new(self.limits) {
            Ok(blank) => {
                self.blanks.push_back(blank);
                if self.blanks.len() < self.target {
                    ctx.notify(Refill);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot create a blank isolate"),
        }
    }
}

impl Handler<PoolLevel> for IsolatePool {
    type Result = usize;

    fn handle(&mut self, _: PoolLevel, _: &mut Self::Context) -> usize {
        self.blanks.len()
    }
}

impl Handler<Spawn> for IsolatePool {
    type Result = ResponseActFuture<Self, Result<Addr<IsolateActor>, EngineError>>;

    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let worker_label = msg.script.name.clone();
        let blank = match self.blanks.pop_front() {
            Some(b) => {
                metrics::counter!(POOL_HITS).increment(1);
                Ok(b)
            }
            None => {
                metrics::counter!(POOL_MISSES).increment(1);
                BlankIsolate::new(self.limits)
            }
        };
        let host = self.host.clone();
        let fut = async move {
            let share = msg.load;
            let worker = blank?.bind(&msg.script, &host).await?;
            let actor =
                IsolateActor::new(msg.isolate_id, worker, msg.control, msg.supervisor, share);
            Ok(actor.start())
        };
        Box::pin(fut.into_actor(self).map(move |result, _act, ctx| {
            schedule_refill(ctx);
            if result.is_ok() {
                metrics::counter!(COLD_STARTS, "worker" => worker_label.clone()).increment(1);
                metrics::histogram!(COLD_START_SECONDS).record(started.elapsed().as_secs_f64());
            }
            result
        }))
    }
}

impl Handler<SpawnObject> for IsolatePool {
    type Result = ResponseActFuture<Self, Result<Addr<DurableObjectActor>, InvokeError>>;

    fn handle(&mut self, msg: SpawnObject, _ctx: &mut Self::Context) -> Self::Result {
        let key = (msg.script.name.clone(), msg.script.version);
        // The version's host on this thread: live, being made, or to be made now.
        let mut used_blank = false;
        let host = {
            let mut hosts = self.hosts.borrow_mut();
            // Forget hosts that are gone (their versions' objects all left).
            hosts.retain(|_, slot| match slot {
                HostSlot::Ready(weak) => weak.strong_count() > 0,
                HostSlot::Starting(_) => true,
            });
            let live = match hosts.get(&key) {
                Some(HostSlot::Ready(weak)) => weak.upgrade().filter(|h| h.death().is_none()),
                _ => None,
            };
            match (live, hosts.get_mut(&key)) {
                (Some(h), _) => HostWay::Have(h),
                (None, Some(HostSlot::Starting(waiters))) => {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    waiters.push(tx);
                    HostWay::Wait(rx)
                }
                (None, _) => {
                    hosts.insert(key.clone(), HostSlot::Starting(Vec::new()));
                    used_blank = true;
                    HostWay::Make(Box::new(match self.blanks.pop_front() {
                        Some(b) => Ok(b),
                        None => BlankIsolate::new(self.limits),
                    }))
                }
            }
        };
        let hosts = self.hosts.clone();
        let services = self.host.clone();
        let load = self.load.clone();
        let fut = async move {
            let host = match host {
                HostWay::Have(h) => h,
                HostWay::Wait(rx) => rx.await.unwrap_or_else(|_| {
                    Err(InvokeError::Unavailable(
                        "Durable Object host start was abandoned".into(),
                    ))
                })?,
                HostWay::Make(blank) => {
                    let made = async {
                        let worker = (*blank)?
                            .bind_as(&msg.script, &services, BindMode::Objects)
                            .await?;
                        Ok::<_, EngineError>(ObjectHost::serve(worker, LoadShare::take(&load)))
                    }
                    .await
                    .map_err(activation_error);
                    let mut hosts = hosts.borrow_mut();
                    let waiters = match hosts.remove(&key) {
                        Some(HostSlot::Starting(w)) => w,
                        _ => Vec::new(),
                    };
                    if let Ok(h) = &made {
                        hosts.insert(key, HostSlot::Ready(Rc::downgrade(h)));
                    }
                    for w in waiters {
                        let _ = w.send(made.clone());
                    }
                    made?
                }
            };
            let has_base = msg.replica.as_ref().map(|r| r.1);
            let store = ObjectStore::open(&msg.database, msg.max_object_bytes, msg.known, has_base)
                .map(Rc::new)
                .map_err(|e| match e {
                    crate::state::StateError::Damaged(m) => InvokeError::Unavailable(m),
                    other => {
                        // The details (with host paths) go to the log, not to callers.
                        tracing::error!(object = %msg.address.id, error = %other, "cannot open object storage");
                        InvokeError::Unavailable(
                            "Durable Object storage could not be opened".into(),
                        )
                    }
                })?;
            // A database rebuilt from its log brings its alarm with it: the
            // directory of this node schedules it (alarms move with objects).
            if has_base.is_some() {
                use crate::js::durable::ObjectStorage;
                if let Ok(at_ms) = store.get_alarm() {
                    msg.alarms.do_send(AlarmChanged {
                        address: msg.address.clone(),
                        at_ms,
                        recorded: false,
                    });
                }
            }
            let slot = host
                .activate(
                    &msg.address.class_name,
                    &msg.address.id,
                    msg.address.name.as_deref(),
                    store.clone(),
                    msg.sockets.clone(),
                )
                .map_err(activation_error)?;
            let settings = ObjectSettings {
                hibernate_after: msg.hibernate_after,
                max_queue: msg.max_queue,
                last_used: msg.last_used,
            };
            let actor = DurableObjectActor::new(
                msg.address,
                msg.activation,
                host,
                slot,
                store,
                settings,
                Some(msg.directory),
                Some(msg.alarms),
            )
            .replicated(msg.replica.map(|r| r.0));
            Ok(actor.start())
        };
        Box::pin(fut.into_actor(self).map(move |result, _act, ctx| {
            if used_blank {
                schedule_refill(ctx);
            }
            result
        }))
    }
}

/// A script error while binding the host or constructing the instance reaches
/// the caller as the exception it is; anything else as the engine failure.
fn activation_error(e: EngineError) -> InvokeError {
    match e {
        EngineError::Script(m) => InvokeError::Exception(m),
        other => other.into(),
    }
}

type HostKey = (String, u64);
type HostResult = Result<Rc<ObjectHost>, InvokeError>;

/// A worker version's object host on this thread.
enum HostSlot {
    Ready(std::rc::Weak<ObjectHost>),
    /// Being bound; activations that arrive meanwhile wait for it.
    Starting(Vec<futures::channel::oneshot::Sender<HostResult>>),
}

enum HostWay {
    Have(Rc<ObjectHost>),
    Wait(futures::channel::oneshot::Receiver<HostResult>),
    Make(Box<Result<BlankIsolate, EngineError>>),
}

/// Refills a little later rather than at once: making a blank isolate holds the
/// thread for several milliseconds, and the isolate just handed out is about to
/// serve its first request on this same thread.
fn schedule_refill(ctx: &mut Context<IsolatePool>) {
    ctx.run_later(REFILL_DELAY, |_, ctx| ctx.notify(Refill));
}

const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// The isolate threads and their pools.
#[derive(Clone)]
pub struct IsolateThreads {
    pools: Arc<Vec<Addr<IsolatePool>>>,
    loads: Arc<Vec<ThreadLoad>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    _arbiters: Arc<Vec<ArbiterGuard>>,
}

/// Stops an arbiter when the last handle to the thread set goes away.
struct ArbiterGuard(ArbiterHandle);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl IsolateThreads {
    /// Starts `threads` isolate threads, each with a pool of `pool_size` blank
    /// isolates. Must be called inside an actix system.
    pub fn start(
        threads: usize,
        pool_size: usize,
        limits: IsolateLimits,
        host: HostServices,
    ) -> Self {
        // Build the snapshot once, here, rather than racing for it on every thread.
        crate::js::snapshot::startup_snapshot();
        let mut pools = Vec::with_capacity(threads);
        let mut arbiters = Vec::with_capacity(threads);
        let mut loads = Vec::with_capacity(threads);
        for _ in 0..threads.max(1) {
            let arbiter = Arbiter::new();
            let handle = arbiter.handle();
            let host = host.clone();
            let load = ThreadLoad::default();
            loads.push(load.clone());
            pools.push(IsolatePool::start_in_arbiter(&handle, move |_| {
                IsolatePool::new(pool_size, limits, host, load)
            }));
            arbiters.push(ArbiterGuard(handle));
        }
        IsolateThreads {
            pools: Arc::new(pools),
            loads: Arc::new(loads),
            next: Arc::default(),
            _arbiters: Arc::new(arbiters),
        }
    }

    /// The least loaded thread for a new isolate (ties broken round robin, so
    /// an idle node spreads new workers over its threads), with one share of
    /// its load already taken for the isolate.
    pub fn reserve(&self) -> (&Addr<IsolatePool>, LoadShare) {
        use std::sync::atomic::Ordering;
        let n = self.pools.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let best = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.loads[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        (&self.pools[best], LoadShare::take(&self.loads[best]))
    }

    /// Isolates running on each thread.
    pub fn loads(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    pub fn pools(&self) -> &[Addr<IsolatePool>] {
        &self.pools
    }

    /// The pool of thread `n` (modulo the thread count).
    pub fn pool(&self, n: usize) -> &Addr<IsolatePool> {
        &self.pools[n % self.pools.len()]
    }
}
