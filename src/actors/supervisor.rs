//! `WorkerSupervisor`: one per deployed worker version.
//!
//! Design. The supervisor owns the membership of its version's isolates: it spawns
//! them (through the isolate pools), keeps `min_warm` alive, grows to
//! `max_isolates` when the data plane reports load, reaps isolates idle for
//! `idle_reap_s` above `min_warm`, replaces isolates that died, and on redeploy
//! drains: it stops once no request is in flight on any of its isolates.
//!
//! The data plane does not route requests through the supervisor's mailbox: the
//! supervisor publishes its isolates in a [`DispatchTable`] (address + in-flight
//! counter per isolate), and a request picks the least-loaded isolate itself and
//! sends `Invoke` straight to it. The supervisor is asked only when there is no
//! isolate yet ([`Acquire`], a cold start) or when the least-loaded one is busy
//! ([`Grow`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use parking_lot::RwLock;

use super::isolate::{IsolateActor, IsolateControl, IsolateExited};
use super::pool::{IsolateThreads, Spawn};
use crate::config::IsolateConfig;
use crate::js::{EngineError, WorkerScript};

pub(crate) const LIMIT_KILLS: &str = "edged_limit_kills_total";

static NEXT_ISOLATE_ID: AtomicU64 = AtomicU64::new(1);

fn process_millis() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One live isolate as the data plane sees it.
#[derive(Clone)]
pub struct Slot {
    pub isolate_id: u64,
    pub addr: Addr<IsolateActor>,
    in_flight: Arc<AtomicUsize>,
    last_used_ms: Arc<AtomicU64>,
    control: Arc<IsolateControl>,
}

impl Slot {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight on this isolate until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_used_ms.store(process_millis(), Ordering::Relaxed);
        InFlightGuard(self.in_flight.clone())
    }
}

pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The isolates of one worker version, published by its supervisor.
#[derive(Default)]
pub struct DispatchTable {
    slots: RwLock<Vec<Slot>>,
}

impl DispatchTable {
    /// The least-loaded isolate and how many isolates there are.
    pub fn least_loaded(&self) -> (Option<Slot>, usize) {
        let slots = self.slots.read();
        let best = slots.iter().min_by_key(|s| s.in_flight()).cloned();
        (best, slots.len())
    }

    pub fn len(&self) -> usize {
        self.slots.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.read().is_empty()
    }

    pub fn total_in_flight(&self) -> usize {
        self.slots.read().iter().map(|s| s.in_flight()).sum()
    }

    fn insert(&self, slot: Slot) {
        self.slots.write().push(slot);
    }

    fn remove(&self, isolate_id: u64) -> Option<Slot> {
        let mut slots = self.slots.write();
        let i = slots.iter().position(|s| s.isolate_id == isolate_id)?;
        Some(slots.swap_remove(i))
    }

    fn all(&self) -> Vec<Slot> {
        self.slots.read().clone()
    }
}

/// Give me an isolate, starting one if there is none. Resolves after the cold start.
#[derive(Message)]
#[rtype(result = "Result<Slot, EngineError>")]
pub struct Acquire;

/// The least-loaded isolate is busy: start another if below `max_isolates`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Grow;

/// A newer version took over: stop when nothing is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

#[derive(Message)]
#[rtype(result = "()")]
struct Spawned(Result<Slot, EngineError>);

pub struct WorkerSupervisor {
    script: Arc<WorkerScript>,
    threads: IsolateThreads,
    config: IsolateConfig,
    table: Arc<DispatchTable>,
    spawning: usize,
    waiters: Vec<oneshot::Sender<Result<Slot, EngineError>>>,
    draining: bool,
}

impl WorkerSupervisor {
    pub fn new(script: Arc<WorkerScript>, threads: IsolateThreads, config: IsolateConfig) -> Self {
        WorkerSupervisor {
            script,
            threads,
            config,
            table: Arc::new(DispatchTable::default()),
            spawning: 0,
            waiters: Vec::new(),
            draining: false,
        }
    }

    pub fn table(&self) -> Arc<DispatchTable> {
        self.table.clone()
    }

    fn spawn_one(&mut self, ctx: &mut Context<Self>) {
        let control = Arc::new(IsolateControl::default());
        let isolate_id = NEXT_ISOLATE_ID.fetch_add(1, Ordering::Relaxed);
        // The least loaded isolate thread (not always thread 0: tenants
        // spread over the threads).
        let (pool, load) = self.threads.reserve();
        let pool = pool.clone();
        self.spawning += 1;
        let msg = Spawn {
            isolate_id,
            script: self.script.clone(),
            control: control.clone(),
            supervisor: Some(ctx.address().recipient()),
            load,
        };
        let me = ctx.address();
        actix::spawn(async move {
            let result = match pool.send(msg).await {
                Ok(Ok(addr)) => Ok(Slot {
                    isolate_id,
                    addr,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                    last_used_ms: Arc::new(AtomicU64::new(process_millis())),
                    control,
                }),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(EngineError::Internal(format!(
                    "isolate pool unavailable: {e}"
                ))),
            };
            me.do_send(Spawned(result));
        });
    }

    fn live(&self) -> usize {
        self.table.len() + self.spawning
    }

    fn keep_min_warm(&mut self, ctx: &mut Context<Self>) {
        while !self.draining && self.live() < self.config.min_warm.max(1) {
            self.spawn_one(ctx);
        }
    }

    fn reap_idle(&mut self) {
        let idle_ms = self.config.idle_reap_s.saturating_mul(1000);
        let now = process_millis();
        let mut live = self.table.len();
        for slot in self.table.all() {
            if live <= self.config.min_warm.max(1) {
                break;
            }
            let idle_for = now.saturating_sub(slot.last_used_ms.load(Ordering::Relaxed));
            if slot.in_flight() == 0 && slot.control.sockets() == 0 && idle_for >= idle_ms {
                if let Some(s) = self.table.remove(slot.isolate_id) {
                    s.control.stop();
                    live -= 1;
                }
            }
        }
    }

    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        if self.draining && self.table.total_in_flight() == 0 && self.spawning == 0 {
            for slot in self.table.all() {
                slot.control.stop();
            }
            ctx.stop();
        }
    }
}

impl Actor for WorkerSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_millis(250);
        ctx.run_interval(every, |act, ctx| {
            if act.draining {
                act.check_drained(ctx);
            } else {
                act.reap_idle();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for slot in self.table.all() {
            slot.control.stop();
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(EngineError::Internal(
                "worker version was replaced".into(),
            )));
        }
    }
}

impl Handler<Acquire> for WorkerSupervisor {
    type Result = ResponseFuture<Result<Slot, EngineError>>;

    fn handle(&mut self, _: Acquire, ctx: &mut Self::Context) -> Self::Result {
        if let (Some(slot), _) = self.table.least_loaded() {
            return Box::pin(async move { Ok(slot) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        if self.spawning == 0 {
            self.spawn_one(ctx);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(EngineError::Internal("supervisor stopped".into())))
        })
    }
}

impl Handler<Grow> for WorkerSupervisor {
    type Result = ();

    fn handle(&mut self, _: Grow, ctx: &mut Self::Context) {
        if !self.draining && self.spawning == 0 && self.live() < self.config.max_isolates {
            self.spawn_one(ctx);
        }
    }
}

impl Handler<Drain> for WorkerSupervisor {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        self.draining = true;
        self.check_drained(ctx);
    }
}

impl Handler<Spawned> for WorkerSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Spawned, ctx: &mut Self::Context) {
        self.spawning -= 1;
        match msg.0 {
            Ok(slot) => {
                if self.draining {
                    slot.control.stop();
                } else {
                    self.table.insert(slot.clone());
                }
                for w in self.waiters.drain(..) {
                    let _ = w.send(Ok(slot.clone()));
                }
                self.keep_min_warm(ctx);
            }
            Err(e) => {
                tracing::warn!(worker = %self.script.name, version = self.script.version, error = %e, "isolate failed to start");
                for w in self.waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
        if self.draining {
            self.check_drained(ctx);
        }
    }
}

impl Handler<IsolateExited> for WorkerSupervisor {
    type Result = ();

    fn handle(&mut self, msg: IsolateExited, ctx: &mut Self::Context) {
        self.table.remove(msg.isolate_id);
        let limit = match &msg.cause {
            Some(EngineError::CpuLimit) => Some("cpu"),
            Some(EngineError::MemoryLimit) => Some("memory"),
            _ => None,
        };
        if let Some(limit) = limit {
            metrics::counter!(LIMIT_KILLS, "worker" => self.script.name.clone(), "limit" => limit)
                .increment(1);
        }
        if msg.cause.is_some() {
            self.keep_min_warm(ctx);
        }
        if self.draining {
            self.check_drained(ctx);
        }
    }
}
