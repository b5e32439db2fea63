//! A worker: an isolate bound to one worker version, serving its requests.
//!
//! Requests interleave at `await` points, as in Workers: [`Worker::start`] calls the
//! JS dispatch function (the synchronous part of the handler runs right away) and
//! parks the returned promise; [`Worker::poll`] drives the event loop and answers
//! every request whose promise has settled. The owner (an `IsolateActor`, or an
//! `ObjectHost` serving Durable Objects through [`Worker::activate`] and
//! [`Worker::start_in`]) calls `poll` from one long-lived future and wakes it
//! after each `start`.
//!
//! CPU accounting: each entry into JavaScript is metered (see `limits.rs`) and
//! charged to the requests whose code ran in it: all of it to the one live
//! request when there is one, else split by who was running (`cpu.rs`); the
//! time Web Crypto spends on other threads is added by its ops (`context.rs`).
//! A request past its limit fails with `CpuLimit` and its context ends; the
//! isolate lives on. A runaway section is stopped by the watchdog at the
//! running request's own budget; that kills the isolate (a terminated isolate
//! is not resumed): its requests in flight fail, the guilty one with the
//! limit, the others as reset, and the owner replaces it.
//!
//! Lifetimes: a request whose handler waits on nothing that could settle gets
//! `NeverResponds` after a short grace; one past `response_timeout` gets
//! `Timeout`; one whose caller went away (its [`Cancel`](super::script::Cancel)
//! guard dropped) is
//! ended.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use deno_core::{v8, PollEventLoopOptions};
use futures::channel::oneshot;

use super::body::{add_source, take_outgoing, take_source, Body, StreamSlot};
use super::context::{self, RequestId, SharedContexts};
use super::error::{EngineError, InvokeError};
use super::isolate::{call, Engine};
use super::script::{InvokeRequest, InvokeResponse};

/// The most CPU one event-loop turn may take, however many requests' work it
/// runs (each is still held to its own budget).
const SECTION_CAP: Duration = Duration::from_secs(5);

/// Requests failed for their CPU time without killing their isolate.
const CPU_KILLS: &str = "edged_request_cpu_kills_total";

/// How long an isolate with nothing pending waits for a new request before
/// the requests it holds are declared hung.
const HANG_GRACE: Duration = Duration::from_millis(250);

/// Where a request's outcome goes.
pub type Reply = oneshot::Sender<Result<InvokeResponse, InvokeError>>;

struct InFlight {
    id: RequestId,
    promise: v8::Global<v8::Promise>,
    reply: Reply,
    started: std::time::Instant,
    cancel: super::script::Cancel,
}

/// The JS side of a Durable Object host (see `bindObjects` in 10_worker.js).
pub(crate) struct ObjectFns {
    pub(crate) activate: v8::Global<v8::Function>,
    pub(crate) deactivate: v8::Global<v8::Function>,
}

/// An isolate bound to one worker version.
pub struct Worker {
    // Field order is drop order: handles into the isolate go before the engine.
    dispatch: v8::Global<v8::Function>,
    /// `clearTimers(ids)` in 00_globals.js: cancels the timers of ended requests.
    clear_timers: v8::Global<v8::Function>,
    /// Set when the isolate hosts Durable Objects (`BindMode::Objects`).
    pub(crate) objects: Option<ObjectFns>,
    in_flight: Vec<InFlight>,
    /// The isolate's request contexts (`context.rs`), shared with its ops.
    contexts: SharedContexts,
    /// Wakes the driver when the next waitUntil window closes.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Since when the event loop has had nothing pending while requests wait.
    idle_since: Option<std::time::Instant>,
    name: Arc<str>,
    engine: Engine,
}

impl Worker {
    pub(crate) fn new(
        engine: Engine,
        dispatch: v8::Global<v8::Function>,
        clear_timers: v8::Global<v8::Function>,
        contexts: SharedContexts,
        name: Arc<str>,
    ) -> Self {
        Worker {
            engine,
            dispatch,
            clear_timers,
            objects: None,
            contexts,
            deadline: None,
            idle_since: None,
            name,
            in_flight: Vec::new(),
        }
    }

    /// Request contexts not yet ended (requests in flight, or finishing their
    /// waitUntil work).
    pub fn live_requests(&self) -> usize {
        self.contexts.borrow().len()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives memory back while idle: a full GC, then V8 trims its heap. Costs a
    /// few milliseconds of this thread, so callers do it only when idle.
    pub fn compact(&mut self) {
        let _entered = self.engine.enter();
        self.engine.runtime.v8_isolate().low_memory_notification();
    }

    /// Whether the Durable Object in `slot` still streams a response or holds
    /// an accepted WebSocket.
    pub fn slot_busy(&self, slot: u32) -> bool {
        self.contexts.borrow().slot_streaming(slot)
    }

    /// WebSocket ends the isolate holds.
    pub fn sockets(&mut self) -> usize {
        self.engine
            .runtime
            .op_state()
            .borrow()
            .try_borrow::<super::websocket::Sockets>()
            .map_or(0, |s| s.held().get())
    }

    /// Requests started and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Starts a request: runs the handler up to its first `await`. An `Err` means
    /// the isolate is dead (the request's reply has been answered already).
    pub fn start(
        &mut self,
        request_id: u64,
        request: InvokeRequest,
        reply: Reply,
    ) -> Result<(), EngineError> {
        self.start_in(None, request_id, request, reply)
    }

    /// Constructs the Durable Object in `slot` of this object host: its storage
    /// goes into the isolate's `OpState`, then `new Class(state, env)` runs
    /// (within the startup CPU budget, as request `request_id`, so that timers it
    /// starts belong to the object). `Err(Script)`: the constructor threw (or
    /// the class is missing) and the slot stays empty; any other `Err` means the
    /// isolate is dead.
    #[allow(clippy::too_many_arguments)]
    pub fn activate(
        &mut self,
        slot: u32,
        class_name: &str,
        id: &str,
        name: Option<&str>,
        storage: std::rc::Rc<dyn super::durable::ObjectStorage>,
        sockets: std::sync::Arc<super::hibernation::ObjectSockets>,
        request_id: u64,
    ) -> Result<(), EngineError> {
        let Some(fns) = &self.objects else {
            return Err(EngineError::Internal("not a Durable Object host".into()));
        };
        {
            let state = self.engine.runtime.op_state();
            let mut state = state.borrow_mut();
            state
                .borrow_mut::<super::durable::ObjectStorages>()
                .0
                .insert(slot, storage);
            if !state.has::<super::hibernation::ObjectSocketSets>() {
                state.put(super::hibernation::ObjectSocketSets::default());
            }
            state
                .borrow_mut::<super::hibernation::ObjectSocketSets>()
                .0
                .insert(slot, sockets);
        }
        let budget = self.engine.limits.startup_cpu;
        // The constructor runs as a request of its own, an event of the object:
        // timers and storage calls it makes belong to the object.
        self.contexts.borrow_mut().begin(request_id, 0, Some(slot));
        let (result, seg) = self.engine.run(budget, |runtime| {
            let scope = &mut runtime.handle_scope();
            let mut args = vec![v8::Integer::new_from_unsigned(scope, slot).into()];
            for s in [class_name, id, name.unwrap_or("")] {
                args.push(
                    v8::String::new(scope, s)
                        .ok_or_else(|| EngineError::Internal("string".into()))?
                        .into(),
                );
            }
            let previous = context::enter(scope, request_id, Some(slot));
            let result = call(scope, &fns.activate, &args);
            context::restore(scope, previous);
            result?;
            scope.perform_microtask_checkpoint();
            Ok::<_, EngineError>(())
        });
        self.contexts.borrow_mut().settle(request_id);
        if let Some(fatal) = self.engine.termination_cause(seg.over_budget) {
            return Err(fatal);
        }
        if result.is_err() {
            self.forget(slot);
        }
        result
    }

    /// Drops the Durable Object in `slot` (hibernation, eviction, reset): its
    /// instance and its storage handle.
    pub fn deactivate(&mut self, slot: u32) {
        if let Some(fns) = &self.objects {
            let _ = self.engine.run(self.engine.limits.cpu, |runtime| {
                let scope = &mut runtime.handle_scope();
                let arg = v8::Integer::new_from_unsigned(scope, slot).into();
                let _ = call(scope, &fns.deactivate, &[arg]);
            });
        }
        // Its events end with it, and the timers it left are cancelled.
        self.contexts.borrow_mut().end_slot(slot);
        self.cancel_orphaned_timers();
        self.forget(slot);
    }

    /// Cancels, in the isolate, the timers of requests that have ended.
    fn cancel_orphaned_timers(&mut self) {
        let ids = self.contexts.borrow_mut().take_orphaned_timers();
        if ids.is_empty() {
            return;
        }
        let clear = &self.clear_timers;
        let _ = self.engine.run(self.engine.limits.cpu, |runtime| {
            let scope = &mut runtime.handle_scope();
            let ids: Vec<v8::Local<v8::Value>> = ids
                .iter()
                .map(|id| v8::Integer::new_from_unsigned(scope, *id).into())
                .collect();
            let array = v8::Array::new_with_elements(scope, &ids).into();
            let _ = call(scope, clear, &[array]);
        });
    }

    fn forget(&mut self, slot: u32) {
        let state = self.engine.runtime.op_state();
        let mut state = state.borrow_mut();
        if let Some(s) = state.try_borrow_mut::<super::durable::ObjectStorages>() {
            s.0.remove(&slot);
        }
        if let Some(s) = state.try_borrow_mut::<super::hibernation::ObjectSocketSets>() {
            s.0.remove(&slot);
        }
    }

    /// [`Worker::start`] for an event of the Durable Object in `slot` (when the
    /// isolate is an object host).
    pub fn start_in(
        &mut self,
        slot: Option<u32>,
        request_id: u64,
        request: InvokeRequest,
        reply: Reply,
    ) -> Result<(), EngineError> {
        let cancel = request.cancel.clone();
        self.idle_since = None;
        self.contexts
            .borrow_mut()
            .begin(request_id, request.depth, slot);
        let dispatch = self.dispatch.clone();
        let (result, seg, guilty) = self.section(request_id, |runtime| {
            let stream_rid = match &request.body {
                Some(Body::Stream(slot)) => slot
                    .take()
                    .map(|s| add_source(&mut runtime.op_state().borrow_mut(), s)),
                _ => None,
            };
            let scope = &mut runtime.handle_scope();
            let cf = match &request.cf {
                Some(cf) => v8::String::new(scope, cf)
                    .map(Into::into)
                    .unwrap_or_else(|| v8::null(scope).into()),
                None => v8::null(scope).into(),
            };
            let entrypoint = match &request.entrypoint {
                Some(e) => v8::String::new(scope, e)
                    .map(Into::into)
                    .unwrap_or_else(|| v8::undefined(scope).into()),
                None => v8::undefined(scope).into(),
            };
            let props = match &request.props {
                Some(p) => v8::String::new(scope, p)
                    .map(Into::into)
                    .unwrap_or_else(|| v8::undefined(scope).into()),
                None => v8::undefined(scope).into(),
            };
            let mut args = request_args(scope, request, stream_rid)?.to_vec();
            // `dispatch(method, url, headers, body, slot, cf, entrypoint, props)`.
            args.push(match slot {
                Some(slot) => v8::Integer::new_from_unsigned(scope, slot).into(),
                None => v8::undefined(scope).into(),
            });
            args.push(cf);
            args.push(entrypoint);
            args.push(props);
            // Everything the handler starts runs as this request.
            let previous = context::enter(scope, request_id, slot);
            let value = call(scope, &dispatch, &args);
            context::restore(scope, previous);
            let promise = v8::Local::<v8::Promise>::try_from(value?)
                .map_err(|_| EngineError::Internal("dispatch did not return a promise".into()))?;
            // Run the handler's promise reactions now: a handler that does no I/O
            // settles here and is answered without waiting for an event-loop turn.
            scope.perform_microtask_checkpoint();
            Ok::<_, EngineError>(v8::Global::new(scope, promise))
        });
        if let Some(fatal) = self.engine.termination_cause(seg.over_budget) {
            let _ = reply.send(Err(fatal.clone().into()));
            return Err(self.fail_all(fatal, guilty));
        }
        match result {
            Ok(promise) => {
                self.in_flight.push(InFlight {
                    id: request_id,
                    promise,
                    reply,
                    started: std::time::Instant::now(),
                    cancel,
                });
                self.enforce_cpu();
                self.answer_settled();
                Ok(())
            }
            Err(EngineError::Script(msg)) => {
                self.contexts.borrow_mut().end(request_id);
                let _ = reply.send(Err(InvokeError::Exception(msg)));
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(e.clone().into()));
                Err(e)
            }
        }
    }

    /// Drives the event loop and answers settled requests. Returns `Ready(err)`
    /// only when the isolate has died; every request in flight has then been
    /// answered with the error.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<EngineError> {
        // Op futures run here, in Rust: one that panics (a bug in an op, or a
        // blocking task that panicked) must cost this isolate, not the thread
        // that serves every other isolate on it.
        let (polled, seg, guilty) = self.section(0, |runtime| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.poll_event_loop(cx, PollEventLoopOptions::default())
            }))
        });
        let polled = match polled {
            Ok(p) => p,
            Err(_) => {
                tracing::error!(worker = %self.name, "a panic in the isolate's event loop; the isolate is retired");
                return Poll::Ready(self.fail_all(
                    EngineError::Internal("internal error while running the request".into()),
                    None,
                ));
            }
        };
        if let Some(fatal) = self.engine.termination_cause(seg.over_budget) {
            return Poll::Ready(self.fail_all(fatal, guilty));
        }
        if let Poll::Ready(Err(e)) = polled {
            // An error that escaped the runtime's own reporting (the JS side logs
            // unhandled rejections and timer exceptions itself). The isolate is in
            // an unknown state: retire it.
            tracing::error!(worker = %self.name, error = %e, "isolate event loop failed");
            return Poll::Ready(self.fail_all(EngineError::Internal(e.to_string()), None));
        }
        self.enforce_cpu();
        self.answer_settled();
        // Nothing left that could settle a promise (no I/O, no timer): a
        // request still waiting never will, unless another request settles it
        // (requests of an isolate share its globals), so it gets a short grace
        // in which a new request resets the clock. Durable Object events are
        // spared: another event of the object may still settle them.
        let idle = matches!(polled, Poll::Ready(Ok(())))
            && self.objects.is_none()
            && !self.in_flight.is_empty();
        match (idle, self.idle_since) {
            (false, _) => self.idle_since = None,
            (true, None) => self.idle_since = Some(std::time::Instant::now()),
            (true, Some(since)) if since.elapsed() >= HANG_GRACE => {
                self.idle_since = None;
                for r in std::mem::take(&mut self.in_flight) {
                    self.contexts.borrow_mut().end(r.id);
                    let _ = r.reply.send(Err(InvokeError::NeverResponds));
                }
            }
            (true, Some(_)) => {}
        }
        self.upkeep_contexts(cx);
        Poll::Pending
    }

    /// Closes the waitUntil windows that are due, cancels the timers of ended
    /// requests, and arranges to be polled when the next window closes.
    fn upkeep_contexts(&mut self, cx: &mut Context<'_>) {
        let now = std::time::Instant::now();
        // Requests past the response limit fail (their context ends).
        if let Some(limit) = self.engine.limits.response_timeout {
            let mut i = 0;
            while i < self.in_flight.len() {
                if now.duration_since(self.in_flight[i].started) >= limit {
                    let late = self.in_flight.swap_remove(i);
                    self.contexts.borrow_mut().end(late.id);
                    let _ = late.reply.send(Err(InvokeError::Timeout(limit.as_secs())));
                } else {
                    i += 1;
                }
            }
        }
        let (expired, next) = {
            let mut contexts = self.contexts.borrow_mut();
            (contexts.expire_due(now), contexts.next_deadline())
        };
        if !expired.is_empty() {
            let window = self.contexts.borrow().limits.wait_until;
            for id in expired {
                tracing::warn!(
                    target: "edged::console",
                    worker = %self.name,
                    request_id = id,
                    "ctx.waitUntil() work did not finish within {} ms of the response; its remaining I/O is cancelled",
                    window.as_millis()
                );
            }
        }
        self.cancel_orphaned_timers();
        // Wake for the next waitUntil window, the next response deadline, and
        // (once a second) to notice callers that went away.
        let response_due = self
            .engine
            .limits
            .response_timeout
            .and_then(|limit| self.in_flight.iter().map(|r| r.started + limit).min());
        let cancel_check = self
            .in_flight
            .iter()
            .any(|r| r.cancel.is_set())
            .then(|| now + Duration::from_secs(1));
        let hang_check = self.idle_since.map(|since| since + HANG_GRACE);
        let next = [next, response_due, cancel_check, hang_check]
            .into_iter()
            .flatten()
            .min();
        self.deadline = next.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        if let Some(sleep) = self.deadline.as_mut() {
            // Registers the waker; a deadline already due wakes us at once.
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn answer_settled(&mut self) {
        let _entered = self.engine.enter();
        let op_state = self.engine.runtime.op_state();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].reply.is_canceled() || self.in_flight[i].cancel.is_cancelled() {
                // Nobody waits for the answer any more (the client left): the
                // request ends now, and its timers and I/O with it.
                let gone = self.in_flight.swap_remove(i);
                self.contexts.borrow_mut().end(gone.id);
                super::websocket::sweep(&mut op_state.borrow_mut(), gone.id);
                continue;
            }
            let outcome = {
                let scope = &mut self.engine.runtime.handle_scope();
                let promise = v8::Local::new(scope, &self.in_flight[i].promise);
                match promise.state() {
                    v8::PromiseState::Pending => None,
                    v8::PromiseState::Fulfilled => {
                        let value = promise.result(scope);
                        Some(read_outcome(scope, value, &op_state))
                    }
                    v8::PromiseState::Rejected => {
                        let value = promise.result(scope);
                        let err = deno_core::error::JsError::from_v8_exception(scope, value);
                        Some(Err(InvokeError::Exception(
                            super::isolate::format_js_error(&err),
                        )))
                    }
                }
            };
            match outcome {
                None => i += 1,
                Some(result) => {
                    let done = self.in_flight.swap_remove(i);
                    self.contexts.borrow_mut().settle(done.id);
                    // Ends the handler made and neither accepted nor returned
                    // are let go (their peers see them close).
                    super::websocket::sweep(&mut op_state.borrow_mut(), done.id);
                    let _ = done.reply.send(result);
                }
            }
        }
    }

    /// The isolate is dead: every request in flight fails. When one request
    /// (`guilty`) killed it, it gets the cause and the others learn that a
    /// neighbour did.
    fn fail_all(&mut self, err: EngineError, guilty: Option<RequestId>) -> EngineError {
        for r in self.in_flight.drain(..) {
            let outcome = match guilty {
                Some(g) if g != r.id => InvokeError::Unavailable(format!(
                    "the isolate was reset because another request on it {err}"
                )),
                _ => err.clone().into(),
            };
            let _ = r.reply.send(Err(outcome));
        }
        err
    }

    /// Runs one synchronous section of JavaScript for request `owner` (0: an
    /// event-loop turn, for whoever has work), metered against the budget it
    /// has left and charged to the requests that ran in it (`cpu.rs`).
    /// Returns the request that was running at its end (the one to blame if
    /// the watchdog stopped it).
    fn section<R>(
        &mut self,
        owner: RequestId,
        f: impl FnOnce(&mut deno_core::JsRuntime) -> R,
    ) -> (R, super::limits::Segment, Option<RequestId>) {
        let limit = self.engine.limits.cpu;
        let (budget, budgets, single) = {
            let contexts = self.contexts.borrow();
            let left = |id: RequestId| {
                contexts
                    .get(id)
                    .map(|c| limit.saturating_sub(c.cpu))
                    .unwrap_or(limit)
                    .max(Duration::from_millis(1))
            };
            if contexts.len() < 2 {
                // The common case, without allocating: at most one request.
                let single = contexts.only();
                let budget = match (owner, single) {
                    (0, Some(id)) => left(id),
                    (0, None) => limit,
                    (id, _) => left(id),
                };
                (budget, Vec::new(), single)
            } else {
                let budgets: Vec<(RequestId, Duration)> = contexts
                    .ids()
                    .into_iter()
                    .map(|id| (id, left(id)))
                    .collect();
                // Each request is held to its own budget at every switch
                // (`limits.rs`); the section as a whole may run the modest
                // work of many.
                let budget = (limit * (budgets.len() as u32 + 1)).min(SECTION_CAP);
                (budget, budgets, None)
            }
        };
        let track = budgets.len() >= 2;
        let (out, seg) = self.engine.run(budget, |runtime| {
            if track {
                super::cpu::begin(runtime.v8_isolate(), owner, budgets);
            }
            let r = f(runtime);
            let shares = track.then(|| super::cpu::end(runtime.v8_isolate()));
            (r, shares)
        });
        let (result, shares) = out;
        let mut contexts = self.contexts.borrow_mut();
        let guilty = match shares {
            Some((walls, last)) => {
                for (id, cpu) in super::cpu::split(&walls, seg.cpu) {
                    if let Some(c) = contexts.get_mut(id) {
                        c.cpu += cpu;
                    }
                }
                (last != 0).then_some(last)
            }
            None => {
                let to = if owner != 0 { Some(owner) } else { single };
                if let Some(c) = to.and_then(|id| contexts.get_mut(id)) {
                    c.cpu += seg.cpu;
                }
                to
            }
        };
        (result, seg, guilty)
    }

    /// Requests that have used up their CPU time fail now (their context ends:
    /// their I/O is refused and their timers stop), the isolate lives on.
    fn enforce_cpu(&mut self) {
        let over = self.contexts.borrow().over_cpu(self.engine.limits.cpu);
        for id in over {
            tracing::warn!(worker = %self.name, request_id = id, "request exceeded its CPU time limit");
            metrics::counter!(CPU_KILLS, "worker" => self.name.to_string()).increment(1);
            if let Some(i) = self.in_flight.iter().position(|r| r.id == id) {
                let r = self.in_flight.swap_remove(i);
                let _ = r.reply.send(Err(InvokeError::CpuLimit));
            }
            self.contexts.borrow_mut().end(id);
        }
        self.cancel_orphaned_timers();
    }
}

fn request_args<'s>(
    scope: &mut v8::HandleScope<'s>,
    request: InvokeRequest,
    stream_rid: Option<u32>,
) -> Result<[v8::Local<'s, v8::Value>; 4], EngineError> {
    let bad = |what: &str| EngineError::Internal(format!("cannot build request {what}"));
    let method = v8::String::new(scope, &request.method)
        .ok_or_else(|| bad("method"))?
        .into();
    let url = v8::String::new(scope, &request.url)
        .ok_or_else(|| bad("url"))?
        .into();
    let mut flat: Vec<v8::Local<v8::Value>> = Vec::with_capacity(request.headers.len() * 2);
    for (name, value) in &request.headers {
        let n = v8::String::new(scope, name).ok_or_else(|| bad("header"))?;
        // Header values are byte strings: one byte per character, as Fetch wants.
        let v = v8::String::new_from_one_byte(scope, value, v8::NewStringType::Normal)
            .ok_or_else(|| bad("header"))?;
        flat.push(n.into());
        flat.push(v.into());
    }
    let headers = v8::Array::new_with_elements(scope, &flat).into();
    let body = match request.body {
        // A streamed body: JS reads it through `op_edged_body_read`.
        Some(Body::Stream(_)) => match stream_rid {
            Some(rid) => v8::Integer::new_from_unsigned(scope, rid).into(),
            None => return Err(bad("body (already taken)")),
        },
        None => v8::null(scope).into(),
        Some(Body::Bytes(bytes)) => {
            let len = bytes.len();
            // Zero-copy when the HTTP layer handed over the only reference.
            let store = v8::ArrayBuffer::new_backing_store_from_vec(Vec::from(bytes)).make_shared();
            let buffer = v8::ArrayBuffer::with_backing_store(scope, &store);
            v8::Uint8Array::new(scope, buffer, 0, len)
                .ok_or_else(|| bad("body"))?
                .into()
        }
    };
    Ok([method, url, headers, body])
}

/// Reads what `dispatch` resolved to: `[status, flatHeaders, body, …]` (see
/// the elements below) or `["error", kind, message]`.
fn read_outcome(
    scope: &mut v8::HandleScope,
    value: v8::Local<v8::Value>,
    op_state: &std::rc::Rc<std::cell::RefCell<deno_core::OpState>>,
) -> Result<InvokeResponse, InvokeError> {
    let malformed = || InvokeError::Exception("internal: malformed dispatch result".into());
    let array = v8::Local::<v8::Array>::try_from(value).map_err(|_| malformed())?;
    let first = element(scope, array, 0).ok_or_else(malformed)?;
    if first.is_string() {
        let kind = element(scope, array, 1)
            .map(|v| v.to_rust_string_lossy(scope))
            .unwrap_or_default();
        let message = element(scope, array, 2)
            .map(|v| v.to_rust_string_lossy(scope))
            .unwrap_or_default();
        return Err(if kind == "bad_response" {
            InvokeError::BadResponse(message)
        } else {
            InvokeError::Exception(message)
        });
    }
    let status = first.uint32_value(scope).ok_or_else(malformed)? as u16;
    let flat = element(scope, array, 1)
        .and_then(|v| v8::Local::<v8::Array>::try_from(v).ok())
        .ok_or_else(malformed)?;
    let mut headers = Vec::with_capacity(flat.length() as usize / 2);
    let mut i = 0;
    while i + 1 < flat.length() {
        let name = flat.get_index(scope, i).ok_or_else(malformed)?;
        let value = flat.get_index(scope, i + 1).ok_or_else(malformed)?;
        headers.push((one_byte(scope, name), one_byte(scope, value)));
        i += 2;
    }
    let body = match element(scope, array, 2) {
        Some(v) if v.is_array_buffer_view() => {
            let view = v8::Local::<v8::ArrayBufferView>::try_from(v).map_err(|_| malformed())?;
            let mut buf = vec![0u8; view.byte_length()];
            view.copy_contents(&mut buf);
            Some(Body::Bytes(bytes::Bytes::from(buf)))
        }
        // A string body is sent as UTF-8 (Fetch's "extract a body").
        Some(v) if v.is_string() => Some(Body::Bytes(bytes::Bytes::from(
            v.to_rust_string_lossy(scope),
        ))),
        // A stream: the resource id of the sink JS is writing it into, or (with
        // "source" after it) of a body from Rust that JS passed on untouched.
        Some(v) if v.is_number() => {
            let rid = v.uint32_value(scope).ok_or_else(malformed)?;
            let untouched = element(scope, array, 3)
                .is_some_and(|k| k.is_string() && k.to_rust_string_lossy(scope) == "source");
            let mut state = op_state.borrow_mut();
            let stream = if untouched {
                take_source(&mut state, rid)
            } else {
                take_outgoing(&mut state, rid)
            };
            Some(Body::Stream(StreamSlot::new(stream.ok_or_else(malformed)?)))
        }
        _ => None,
    };
    let encode_manually = element(scope, array, 5).is_some_and(|v| v.is_true());
    // A WebSocket's end (the fifth element of a 101), out of the isolate's table.
    let websocket = match element(scope, array, 4) {
        Some(v) if v.is_number() => {
            let id = v.uint32_value(scope).ok_or_else(malformed)?;
            let end =
                super::websocket::take_socket(&mut op_state.borrow_mut(), id).ok_or_else(|| {
                    InvokeError::Exception(
                        "TypeError: Can't return WebSocket that was already used in a response."
                            .into(),
                    )
                })?;
            Some(super::websocket::SocketSlot::new(end))
        }
        _ => None,
    };
    // An RPC answer that passed targets by reference: [session, count].
    let rpc = match element(scope, array, 6) {
        Some(v) if v.is_array() => {
            let pair = v8::Local::<v8::Array>::try_from(v).map_err(|_| malformed())?;
            let session = pair
                .get_index(scope, 0)
                .and_then(|n| n.integer_value(scope))
                .filter(|n| *n > 0)
                .ok_or_else(malformed)?;
            let count = pair
                .get_index(scope, 1)
                .and_then(|n| n.uint32_value(scope))
                .ok_or_else(malformed)?;
            Some(super::rpc::RpcExports {
                session: session as u64,
                count,
                route: None,
            })
        }
        _ => None,
    };
    Ok(InvokeResponse {
        status,
        headers,
        body,
        websocket,
        encode_manually,
        rpc,
    })
}

/// Element `i` of a dispatch result: only the array's own elements (an index
/// past its end would be read from `Array.prototype`, which tenant code can
/// patch).
fn element<'s>(
    scope: &mut v8::HandleScope<'s>,
    array: v8::Local<'_, v8::Array>,
    i: u32,
) -> Option<v8::Local<'s, v8::Value>> {
    if i < array.length() {
        array.get_index(scope, i)
    } else {
        None
    }
}

/// A JS byte string (every character ≤ U+00FF) as its bytes.
fn one_byte(scope: &mut v8::HandleScope, value: v8::Local<v8::Value>) -> Vec<u8> {
    let Some(s) = value.to_string(scope) else {
        return Vec::new();
    };
    let mut buf = vec![0u8; s.length()];
    s.write_one_byte_v2(scope, 0, &mut buf, v8::WriteFlags::empty());
    buf
}
