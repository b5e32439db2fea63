//! `IsolateActor`: owns one [`Worker`] (an isolate bound to one worker version) on
//! its isolate thread and serves `Invoke` messages with it.
//!
//! Several requests may be in flight at once; they interleave at `await` points.
//! A long-lived [`Driver`] future polls the isolate's event loop and answers
//! requests as their promises settle. Control outranks requests: the supervisor
//! stops an isolate through [`IsolateControl`] (a flag plus a wake-up), which the
//! driver checks before anything else, so a flooded mailbox cannot delay a stop.
//! When the isolate dies (CPU or heap limit) the actor stops and tells its
//! supervisor with [`IsolateExited`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use actix::prelude::*;
use futures::channel::oneshot;
use futures::task::AtomicWaker;

use crate::js::{EngineError, InvokeError, InvokeRequest, InvokeResponse, Worker};

pub(crate) const LIVE_ISOLATES: &str = "edged_live_isolates";

/// A request for the isolate's worker.
#[derive(Message)]
#[rtype(result = "Result<InvokeResponse, InvokeError>")]
pub struct Invoke {
    pub request_id: u64,
    pub request: InvokeRequest,
}

/// Sent to the supervisor when an isolate actor has stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IsolateExited {
    pub isolate_id: u64,
    /// `None` for an orderly stop, otherwise why the isolate died.
    pub cause: Option<EngineError>,
}

/// The supervisor's out-of-band line to an isolate actor.
#[derive(Default)]
pub struct IsolateControl {
    stop: AtomicBool,
    waker: AtomicWaker,
    /// WebSocket ends the isolate held at its last check: an isolate with
    /// open sockets is not reaped as idle.
    sockets: AtomicUsize,
}

impl IsolateControl {
    /// Asks the actor to stop once it is next polled, ahead of queued requests.
    /// Requests in flight are answered with `Unavailable`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Relaxed)
    }
}

pub struct IsolateActor {
    id: u64,
    worker: Worker,
    control: Arc<IsolateControl>,
    supervisor: Option<Recipient<IsolateExited>>,
    driver: Option<Waker>,
    turn_scheduled: bool,
    /// A request arrived since the last idle check.
    recent_requests: bool,
    /// Requests since the last idle compaction.
    busy_since_compact: bool,
    cause: Option<EngineError>,
    /// This isolate's share of its thread's load.
    _load: super::pool::LoadShare,
}

/// An isolate with no requests for this long gives memory back (`Worker::compact`).
const COMPACT_AFTER_IDLE: Duration = Duration::from_secs(2);

impl IsolateActor {
    pub fn new(
        id: u64,
        worker: Worker,
        control: Arc<IsolateControl>,
        supervisor: Option<Recipient<IsolateExited>>,
        load: super::pool::LoadShare,
    ) -> Self {
        IsolateActor {
            _load: load,
            id,
            worker,
            control,
            supervisor,
            driver: None,
            turn_scheduled: false,
            recent_requests: false,
            busy_since_compact: true,
            cause: None,
        }
    }

    fn wake_driver(&self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    fn die(&mut self, cause: EngineError, ctx: &mut Context<Self>) {
        tracing::warn!(worker = self.worker.name(), isolate = self.id, %cause, "isolate terminated");
        self.cause = Some(cause);
        ctx.stop();
    }
}

impl Actor for IsolateActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!(LIVE_ISOLATES).increment(1.0);
        ctx.spawn(Driver);
        let mut quiet_ticks = 0u32;
        ctx.run_interval(COMPACT_AFTER_IDLE / 2, move |act, _| {
            let sockets = act.worker.sockets();
            act.control.sockets.store(sockets, Ordering::Relaxed);
            if act.worker.in_flight() > 0 || std::mem::take(&mut act.recent_requests) {
                quiet_ticks = 0;
                return;
            }
            quiet_ticks += 1;
            if quiet_ticks >= 2 && act.busy_since_compact {
                act.worker.compact();
                act.busy_since_compact = false;
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        metrics::gauge!(LIVE_ISOLATES).decrement(1.0);
        if let Some(s) = &self.supervisor {
            s.do_send(IsolateExited {
                isolate_id: self.id,
                cause: self.cause.take(),
            });
        }
    }
}

impl Handler<Invoke> for IsolateActor {
    type Result = actix::Response<Result<InvokeResponse, InvokeError>>;

    fn handle(&mut self, msg: Invoke, ctx: &mut Self::Context) -> Self::Result {
        if self.control.stop_requested() {
            return actix::Response::reply(Err(InvokeError::Stopping));
        }
        self.recent_requests = true;
        self.busy_since_compact = true;
        let (tx, mut rx) = oneshot::channel();
        if let Err(fatal) = self.worker.start(msg.request_id, msg.request, tx) {
            self.die(fatal, ctx);
        }
        match rx.try_recv() {
            // Settled during start: answer without another hop. Async ops and
            // timers the handler started wake the driver themselves; anything
            // else (a stray rejection to report) waits for one deferred turn,
            // shared by all requests in the same millisecond.
            Ok(Some(result)) => {
                if !self.turn_scheduled {
                    self.turn_scheduled = true;
                    ctx.run_later(Duration::from_millis(1), |act, _| {
                        act.turn_scheduled = false;
                        act.wake_driver();
                    });
                }
                actix::Response::reply(result)
            }
            _ => {
                self.wake_driver();
                actix::Response::fut(async move {
                    rx.await
                        .unwrap_or_else(|_| Err(InvokeError::Unavailable("isolate stopped".into())))
                })
            }
        }
    }
}

/// Polls the isolate's event loop for as long as the actor lives.
struct Driver;

impl ActorFuture<IsolateActor> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut IsolateActor,
        ctx: &mut Context<IsolateActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        act.control.waker.register(task.waker());
        if act.control.stop_requested() {
            ctx.stop();
            return Poll::Ready(());
        }
        if act
            .driver
            .as_ref()
            .is_none_or(|w| !w.will_wake(task.waker()))
        {
            act.driver = Some(task.waker().clone());
        }
        match act.worker.poll(task) {
            Poll::Ready(fatal) => {
                act.die(fatal, ctx);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
