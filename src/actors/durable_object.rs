//! `DurableObjectActor`: one live Durable Object — its instance of the class
//! (in a slot of its worker version's `ObjectHost`) and its storage — serving
//! its events through the gates below.
//!
//! Gates. *Input gate*: storage calls complete inside the isolate's turn (they
//! never yield to the event loop), so while an event awaits storage no other
//! event can start. When every running event is parked on other I/O (fetch, a
//! timer, another object's answer), the next queued event starts, as in
//! Workers — which is also what lets object A call B while B calls A back.
//! `blockConcurrencyWhile` and an open `transaction()` shut the gate until they
//! end ([`ObjectStore::holds_events`]). *Output gate*: an event's response is held until every write made up
//! to its end is durable. *Group commit*: writes collect in the store's pending
//! layer; when an event ends and no commit is in flight, one commit takes
//! everything pending; events that end while it runs wait for the next one. The
//! object keeps executing while a commit is in flight, so one fsync covers the
//! writes of many events (in a cluster a commit right after a shared one waits
//! a moment for the callers that one released: [`DurableObjectActor::linger`]).
//! A failed commit fails every held response and resets
//! the object (the actor stops; the next call activates a fresh instance).
//!
//! Hibernation: idle for `hibernate_after` (no queue, nothing in flight or
//! committing), the actor stops — instance dropped from its host, database
//! closed — and tells the directory; the next call reactivates it with a fresh
//! constructor call. If the host's isolate dies (a CPU or memory limit hit by
//! any object in it), every object in it resets.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;

use super::object_host::ObjectHost;
use crate::cluster::replication::ObjectLog;
use crate::js::durable::ObjectAddress;
use crate::js::{EngineError, InvokeError, InvokeRequest, InvokeResponse};
use crate::state::durable::{commit, ObjectStore};
use std::sync::Arc;

pub(crate) const LIVE_OBJECTS: &str = "edged_do_live_objects";
const HIBERNATIONS: &str = "edged_do_hibernations_total";
const EVENTS: &str = "edged_do_events_total";
const EVENT_SECONDS: &str = "edged_do_event_seconds";
const COMMIT_EVENTS: &str = "edged_do_commit_batch_events";

/// How long, as a share of the last append's time, a replicated commit waits
/// for the callers the previous one released ([`DurableObjectActor::linger`]).
const LINGER_SHARE: f64 = 0.5;
const MAX_LINGER: Duration = Duration::from_millis(3);

type Outcome = Result<InvokeResponse, InvokeError>;
type Reply = oneshot::Sender<Outcome>;

/// One event for the object.
#[derive(Message)]
#[rtype(result = "Result<InvokeResponse, InvokeError>")]
pub struct ObjectInvoke {
    pub request_id: u64,
    pub request: InvokeRequest,
}

/// Sent to the directory when a commit changed the object's alarm.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AlarmChanged {
    pub address: ObjectAddress,
    /// Milliseconds since the epoch; None when deleted.
    pub at_ms: Option<u64>,
    /// In a cluster: the commit already recorded it in the engine (before
    /// its responses were released); otherwise the directory publishes it.
    pub recorded: bool,
}

/// Sent to the directory when an object actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ObjectStopped {
    pub address: ObjectAddress,
    pub activation: u64,
}

struct Queued {
    request_id: u64,
    request: InvokeRequest,
    reply: Reply,
    arrived: Instant,
}

struct Running {
    reply: Reply,
    arrived: Instant,
}

pub struct ObjectSettings {
    pub hibernate_after: Duration,
    pub max_queue: usize,
    /// When the object last took an event (ms since the epoch), shared with the
    /// directory, which evicts the least recently used objects past its cap.
    pub last_used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// From the directory when too many objects are live: stop now if idle (the
/// next call reactivates the object). Answers whether it stopped.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Evict;

const EVICTIONS: &str = "edged_do_evictions_total";

/// The node is leaving the cluster (a planned hand-over): the object takes
/// no new event (a caller is told to try again, and does, on the next
/// owner), lets the events it started finish and their writes become
/// durable, then stops; the answer comes when it has stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver;

/// What an event refused during a hand-over gets: it never ran, and the
/// caller may send it again (to the next owner).
pub(crate) const HANDING_OVER: &str =
    "Durable Object unavailable: its node is handing it over to another (retryable)";

/// Stop now, whatever the object is doing: queued, running and held events
/// fail with the reason (its worker was deleted).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kill(pub String);

pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct DurableObjectActor {
    address: ObjectAddress,
    activation: u64,
    host: Rc<ObjectHost>,
    /// The object's slot in its host.
    slot: u32,
    store: Rc<ObjectStore>,
    settings: ObjectSettings,
    directory: Option<Recipient<ObjectStopped>>,
    alarms: Option<Recipient<AlarmChanged>>,
    queue: VecDeque<Queued>,
    /// Started events not yet settled, by sequence number; more than one only
    /// while all but the newest are parked on non-storage I/O.
    running: HashMap<u64, Running>,
    next_event: u64,
    /// Events done, responses held until their writes are durable.
    held: Vec<(Outcome, Reply, Instant)>,
    committing: bool,
    /// In a cluster: the last commit's events, its append time, and when it
    /// was released (for [`Self::linger`]).
    last_commit: Option<(usize, Duration, Instant)>,
    /// A lingering commit's timer is set.
    lingering: bool,
    last_active: Instant,
    /// In a cluster: the object's log (commits are released on its
    /// acknowledgement, and nothing is released without the node's lease).
    log: Option<Arc<ObjectLog>>,
    /// A hand-over in progress ([`HandOver`]): who waits for the stop.
    handing_over: Option<Vec<oneshot::Sender<()>>>,
}

impl DurableObjectActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        address: ObjectAddress,
        activation: u64,
        host: Rc<ObjectHost>,
        slot: u32,
        store: Rc<ObjectStore>,
        settings: ObjectSettings,
        directory: Option<Recipient<ObjectStopped>>,
        alarms: Option<Recipient<AlarmChanged>>,
    ) -> Self {
        DurableObjectActor {
            address,
            activation,
            host,
            slot,
            store,
            settings,
            directory,
            alarms,
            queue: VecDeque::new(),
            running: HashMap::new(),
            next_event: 0,
            held: Vec::new(),
            committing: false,
            last_commit: None,
            lingering: false,
            last_active: Instant::now(),
            log: None,
            handing_over: None,
        }
    }

    /// During a hand-over: stops once nothing is left in flight.
    fn finish_hand_over(&mut self, ctx: &mut Context<Self>) {
        if self.handing_over.is_some() && self.idle() && ctx.state() == ActorState::Running {
            tracing::debug!(object = %self.address.id, "handed over");
            ctx.stop();
        }
    }

    /// In a cluster: commits go to the object's log before release.
    pub fn replicated(mut self, log: Option<Arc<ObjectLog>>) -> Self {
        self.log = log;
        self
    }

    /// Why held responses may not be released now (the node's lease lapsed:
    /// another node may own the object already).
    fn gate_shut(&self) -> Option<String> {
        match &self.log {
            Some(log) if !log.lease_valid() => Some(
                "this node's cluster membership lease lapsed; the object may have moved".into(),
            ),
            _ => None,
        }
    }

    /// Moves events along: lets queued events in while the gate is open and
    /// starts a commit when one is due.
    ///
    /// Called only between isolate turns, so every running event is parked on
    /// something other than storage (storage calls never leave the turn): the
    /// gate is open unless `blockConcurrencyWhile` or a transaction holds it.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if let Some(cause) = self.host.death() {
            self.reset(cause, ctx);
            return;
        }
        if let Some(why) = self.store.take_reset() {
            self.reset(EngineError::Internal(why), ctx);
            return;
        }
        while !self.store.holds_events() {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            self.last_active = Instant::now();
            let (tx, rx) = oneshot::channel();
            let seq = self.next_event;
            self.next_event += 1;
            self.running.insert(
                seq,
                Running {
                    reply: next.reply,
                    arrived: next.arrived,
                },
            );
            if let Err(fatal) = self
                .host
                .start(self.slot, next.request_id, next.request, tx)
            {
                self.reset(fatal, ctx);
                return;
            }
            ctx.spawn(
                rx.into_actor(self)
                    .map(move |outcome, act, ctx| act.settled(seq, outcome.ok(), ctx)),
            );
        }
        self.maybe_commit(ctx);
        self.finish_hand_over(ctx);
    }

    /// An event's outcome: held until its writes are durable.
    fn settled(&mut self, seq: u64, outcome: Option<Outcome>, ctx: &mut Context<Self>) {
        if let Some(cause) = self.host.death() {
            self.reset(cause, ctx);
            return;
        }
        let Some(r) = self.running.remove(&seq) else {
            return;
        };
        match outcome {
            Some(outcome) => self.held.push((outcome, r.reply, r.arrived)),
            None => {
                let _ = r
                    .reply
                    .send(Err(InvokeError::Unavailable("object reset".into())));
            }
        }
        self.pump(ctx);
    }

    fn maybe_commit(&mut self, ctx: &mut Context<Self>) {
        // Writes made outside any event (the constructor, a timer after the
        // response) are committed too, so hibernation never drops them.
        // An outgoing message waiting on the output gate makes a commit due
        // mid-event.
        if self.committing
            || self.store.in_transaction()
            || (self.held.is_empty()
                && !self.store.flush_wanted()
                && (!self.running.is_empty() || !self.store.has_pending()))
        {
            return;
        }
        if self.linger(ctx) {
            return;
        }
        let batch = self.store.take_batch();
        let waiters = self.store.take_flush_waiters();
        let held = std::mem::take(&mut self.held);
        if batch.is_empty() {
            self.store.commit_done();
            if let Some(why) = self.gate_shut() {
                return self.fail_commit(held, waiters, why, ctx);
            }
            release(held);
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return;
        }
        metrics::histogram!(COMMIT_EVENTS).record(held.len() as f64);
        let events = held.len();
        let started = Instant::now();
        let alarm_change = batch.alarm;
        self.committing = true;
        let writer = self.store.writer();
        let handoff = self.store.sql_handoff();
        let shipper = self.store.shipper();
        let log = self.log.clone();
        let address = self.address.clone();
        // Started now, not when the future is first polled: SQL on this
        // thread waits for the commit to take the writer's open transaction
        // (`sql_handoff`), and this thread could run that SQL before it polls
        // the future again.
        let local = tokio::task::spawn_blocking(move || {
            commit(&writer, &batch, &handoff, shipper.as_deref())
        });
        let fut = async move {
            let local = local.await;
            let shipped = match local {
                Ok(Ok(Some(pages))) => match &log {
                    Some(log) => log.append(pages).await.map_err(CommitFailure::Log),
                    None => Ok(()),
                },
                Ok(Ok(None)) => Ok(()),
                Ok(Err(e)) if e.is_disk_full() => Err(CommitFailure::DiskFull),
                Ok(Err(e)) => Err(CommitFailure::Local(e.to_string())),
                Err(e) => Err(CommitFailure::Local(e.to_string())),
            };
            // In a cluster, where the alarm is due is in the engine before
            // anyone learns of it, so that it fires even if this node dies
            // right after (`cluster/alarms.rs`).
            let recorded = match (&shipped, &log, alarm_change) {
                (Ok(()), Some(log), Some(at_ms)) => log.record_alarm(&address, at_ms).await,
                _ => false,
            };
            shipped.map(|()| recorded)
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.committing = false;
            act.store.commit_done();
            let result = result.and_then(|recorded| match act.gate_shut() {
                Some(why) => Err(CommitFailure::Log(why)),
                None => Ok(recorded),
            });
            match result {
                Ok(recorded) => {
                    if let (Some(at_ms), Some(alarms)) = (alarm_change, &act.alarms) {
                        alarms.do_send(AlarmChanged {
                            address: act.address.clone(),
                            at_ms,
                            recorded,
                        });
                    }
                    release(held);
                    for w in waiters {
                        let _ = w.send(Ok(()));
                    }
                    act.last_commit = Some((events, started.elapsed(), Instant::now()));
                    act.maybe_commit(ctx);
                    act.finish_hand_over(ctx);
                }
                Err(CommitFailure::DiskFull) => {
                    let why = "the node's disk is full; the writes were not stored".to_owned();
                    act.fail_commit(held, waiters, why, ctx)
                }
                Err(CommitFailure::Local(why)) => act.fail_commit(held, waiters, why, ctx),
                Err(CommitFailure::Log(why)) => act.fail_commit(
                    held,
                    waiters,
                    format!("the commit was not replicated: {why}"),
                    ctx,
                ),
            }
        }));
    }

    /// Whether a commit that is due waits a moment first (and a timer is set
    /// to start it). In a cluster one commit is in flight per object (the
    /// engine takes one conditional append per object at a time), so callers
    /// released by a commit send their next events while the next commit is
    /// already running, and wait for two: with many callers they split into
    /// two cohorts that alternate. Right after a commit shared by several
    /// events, the next one waits a fraction of the last append's time
    /// ([`LINGER_SHARE`], at most [`MAX_LINGER`]) so the released callers'
    /// next events join it: fewer, larger commits, and less engine work per
    /// event. A commit of one event (one caller) never waits, nor does a
    /// flush an outgoing message waits on, nor anything on a single node.
    fn linger(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.log.is_none() || self.store.flush_wanted() || self.handing_over.is_some() {
            return false;
        }
        if self.lingering {
            return true;
        }
        let Some((events, append, released)) = self.last_commit else {
            return false;
        };
        if events < 2 {
            return false;
        }
        let wait = append.mul_f64(LINGER_SHARE).min(MAX_LINGER);
        let Some(left) = wait.checked_sub(released.elapsed()) else {
            return false;
        };
        self.lingering = true;
        ctx.run_later(left, |act, ctx| {
            act.lingering = false;
            act.last_commit = None;
            act.maybe_commit(ctx);
        });
        true
    }

    /// Fails the responses and outgoing messages the commit held, then resets.
    fn fail_commit(
        &mut self,
        held: Vec<(Outcome, Reply, Instant)>,
        waiters: Vec<crate::state::durable::FlushWaiter>,
        error: String,
        ctx: &mut Context<Self>,
    ) {
        tracing::error!(object = %self.address.id, %error, "Durable Object commit failed; resetting the object");
        if let Some(log) = &self.log {
            // The local database may hold what the log does not.
            log.invalidate();
        }
        for (_, reply, _) in held {
            let _ = reply.send(Err(InvokeError::Unavailable(format!(
                "storage commit failed: {error}"
            ))));
        }
        for w in waiters {
            let _ = w.send(Err(format!("storage commit failed: {error}")));
        }
        self.reset(EngineError::Internal(error), ctx);
    }

    /// Fails everything queued or held and stops: the next call starts afresh.
    fn reset(&mut self, cause: EngineError, ctx: &mut Context<Self>) {
        tracing::warn!(object = %self.address.id, class = %self.address.class_name, %cause, "Durable Object reset");
        let err: InvokeError = match cause {
            EngineError::CpuLimit | EngineError::MemoryLimit => cause.into(),
            other => InvokeError::Unavailable(other.to_string()),
        };
        for (_, r) in self.running.drain() {
            let _ = r.reply.send(Err(err.clone()));
        }
        for q in self.queue.drain(..) {
            let _ = q.reply.send(Err(err.clone()));
        }
        for (_, reply, _) in self.held.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        ctx.stop();
    }

    fn idle(&self) -> bool {
        self.queue.is_empty()
            && self.running.is_empty()
            && self.held.is_empty()
            && !self.committing
            && !self.store.has_pending()
            && !self.host.busy(self.slot)
    }
}

/// Why a commit did not become durable.
enum CommitFailure {
    DiskFull,
    Local(String),
    Log(String),
}

fn release(held: Vec<(Outcome, Reply, Instant)>) {
    for (outcome, reply, arrived) in held {
        metrics::histogram!(EVENT_SECONDS).record(arrived.elapsed().as_secs_f64());
        let _ = reply.send(outcome);
    }
}

impl Actor for DurableObjectActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!(LIVE_OBJECTS).increment(1.0);
        ctx.spawn(Driver);
        let every = (self.settings.hibernate_after / 4).max(Duration::from_millis(50));
        ctx.run_interval(every, |act, ctx| {
            if act.idle() && act.last_active.elapsed() >= act.settings.hibernate_after {
                metrics::counter!(HIBERNATIONS).increment(1);
                tracing::debug!(object = %act.address.id, "hibernating");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!(LIVE_OBJECTS).decrement(1.0);
        for w in self.handing_over.take().unwrap_or_default() {
            let _ = w.send(());
        }
        self.host.deactivate(self.slot);
        if let Some(d) = &self.directory {
            d.do_send(ObjectStopped {
                address: self.address.clone(),
                activation: self.activation,
            });
        }
    }
}

impl Handler<ObjectInvoke> for DurableObjectActor {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, msg: ObjectInvoke, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if ctx.state() != ActorState::Running {
            // Stopping (hibernating or evicted): the event never starts here,
            // so the caller may safely send it to the next activation.
            let _ = tx.send(Err(InvokeError::Stopping));
        } else if self.handing_over.is_some() {
            let _ = tx.send(Err(InvokeError::Cluster(HANDING_OVER.into())));
        } else if self.queue.len() + self.running.len() >= self.settings.max_queue {
            let _ = tx.send(Err(InvokeError::Unavailable(format!(
                "Durable Object is overloaded: {} events already queued or running",
                self.queue.len() + self.running.len()
            ))));
        } else {
            metrics::counter!(EVENTS).increment(1);
            self.last_active = Instant::now();
            self.settings
                .last_used
                .store(epoch_ms(), std::sync::atomic::Ordering::Relaxed);
            self.queue.push_back(Queued {
                // A node-unique id per event: objects share isolates, and the
                // caller's id may reach several of them (timers, waitUntil
                // windows and logs are kept by request id).
                request_id: {
                    let id = super::deployment::next_request_id();
                    tracing::trace!(caller = msg.request_id, event = id, object = %self.address.id, "object event");
                    id
                },
                request: msg.request,
                reply: tx,
                arrived: Instant::now(),
            });
            self.pump(ctx);
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(InvokeError::Unavailable("Durable Object stopped".into())))
        })
    }
}

impl Handler<Evict> for DurableObjectActor {
    type Result = bool;

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) -> bool {
        if !self.idle() {
            return false;
        }
        metrics::counter!(EVICTIONS).increment(1);
        tracing::debug!(object = %self.address.id, "evicted (too many live objects)");
        ctx.stop();
        true
    }
}

impl Handler<HandOver> for DurableObjectActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: HandOver, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if ctx.state() != ActorState::Running {
            let _ = tx.send(());
        } else {
            // Queued events never started: their callers try the next owner.
            for q in self.queue.drain(..) {
                let _ = q.reply.send(Err(InvokeError::Cluster(HANDING_OVER.into())));
            }
            self.handing_over.get_or_insert_with(Vec::new).push(tx);
            self.finish_hand_over(ctx);
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Kill> for DurableObjectActor {
    type Result = ();

    fn handle(&mut self, msg: Kill, ctx: &mut Self::Context) {
        self.reset(EngineError::Internal(msg.0), ctx);
    }
}

/// Wakes when the object's store says there is something to do that no event
/// outcome announces (writes made outside events, the gate reopened, a flush
/// asked for, the host gone) and moves things along.
struct Driver;

impl ActorFuture<DurableObjectActor> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut DurableObjectActor,
        ctx: &mut Context<DurableObjectActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        act.store.set_waker(task.waker());
        act.pump(ctx);
        Poll::Pending
    }
}
