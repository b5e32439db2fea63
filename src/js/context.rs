//! Request contexts: which request JavaScript is running for, and everything the
//! runtime enforces per request, kept in Rust where tenant code cannot reach it.
//!
//! Design. Every entry into a worker's JavaScript on behalf of a request (a
//! fetch, an RPC call, a scheduled event, a Durable Object event or constructor)
//! runs with V8's *continuation-preserved embedder data* set to the request's id
//! (and, for a Durable Object's event, the object's slot in its isolate:
//! [`enter`]). V8 carries that value along promise chains, and deno's timers
//! carry it into their callbacks, so all code a request starts runs with its id.
//! Tenant code cannot set it: the runtime's `core` object, the only JS handle on
//! it, is unreachable once an isolate is sealed. Ops that act for a request read
//! the id from V8 ([`current`]) and everything else from the [`Contexts`] table
//! in the isolate's `OpState`: the call depth, the subrequests made, the Durable
//! Object slot, whether the request may still do I/O. No JS argument is trusted
//! for any of these.
//!
//! Lifecycle. A context begins when its request is dispatched. It *settles* when
//! the handler's outcome is known, and ends once it is settled and its
//! `ctx.waitUntil()` work is done. A context whose waitUntil window closes first
//! is *expired*: its I/O fails with a clear error until its work is done or a
//! grace period passes. When a context ends, the timers it started are
//! cancelled, as in Workers nothing runs for a request after it ends. In a
//! Durable Object (a context with a slot) timers belong to the object: the
//! context lingers while it has timers and ends when they are done or the object
//! leaves its isolate.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use deno_core::{op2, v8, OpState};

/// Request contexts alive on the node (requests in flight or finishing their
/// waitUntil work): a gauge that must come back to zero when load stops.
pub const LIVE_CONTEXTS: &str = "edged_request_contexts";

/// A node-unique request id (never 0).
pub type RequestId = u64;

/// Worker-to-worker (and object-to-object) calls one client request may lead
/// to, in a chain.
pub const MAX_DEPTH: u8 = 16;

/// How long an expired context's I/O keeps failing with the waitUntil message
/// before the context is dropped altogether.
const EXPIRED_GRACE: Duration = Duration::from_secs(30);

/// Workers' message for I/O outside any handler.
pub const GLOBAL_SCOPE: &str = "Disallowed operation called within global scope. Asynchronous I/O (ex: fetch() or connect()), setting a timeout, and generating random values are not allowed within global scope. To fix this error, perform this operation within a handler. https://developers.cloudflare.com/workers/runtime-apis/handlers/";

/// What the runtime knows about one request in flight in an isolate.
#[derive(Debug)]
pub struct Context {
    /// Worker-to-worker calls that led to this request (0 from a client).
    pub depth: u8,
    /// Outbound fetches, service-binding calls and Durable Object calls made.
    pub subrequests: u32,
    /// The Durable Object this request is an event of (object hosts).
    pub slot: Option<u32>,
    /// The handler's outcome is known (the response is on its way).
    settled: bool,
    /// `ctx.waitUntil()` promises not yet settled.
    wait_until: u32,
    /// Response bodies the request is still writing (a streamed response keeps
    /// its request live for as long as it streams, with no deadline).
    streams: u32,
    /// When the waitUntil window closes (set when the context settles).
    deadline: Option<Instant>,
    /// The window closed with work still pending.
    expired_at: Option<Instant>,
    /// Timers (setTimeout/setInterval ids) the request started and that have not
    /// fired (timeouts) or been cleared.
    timers: HashSet<u32>,
    /// CPU time charged to the request so far.
    pub cpu: Duration,
}

impl Context {
    fn new(depth: u8, slot: Option<u32>) -> Self {
        Context {
            depth,
            subrequests: 0,
            slot,
            settled: false,
            wait_until: 0,
            streams: 0,
            deadline: None,
            expired_at: None,
            timers: HashSet::new(),
            cpu: Duration::ZERO,
        }
    }

    fn done(&self) -> bool {
        self.settled
            && self.wait_until == 0
            && self.streams == 0
            && (self.slot.is_none() || self.timers.is_empty())
    }

    /// Starts the waitUntil window once the response is complete.
    fn open_window(&mut self, wait: Duration) {
        if self.settled && self.streams == 0 && self.slot.is_none() && self.deadline.is_none() {
            self.deadline = Some(Instant::now() + wait);
        }
    }

    /// May the request still start I/O?
    pub fn live(&self) -> bool {
        self.expired_at.is_none()
    }
}

/// Per-request limits, from the node's runtime policy.
#[derive(Debug, Clone, Copy)]
pub struct ContextLimits {
    /// Subrequests per request.
    pub subrequests: u32,
    /// How long waitUntil() work may run after the response.
    pub wait_until: Duration,
}

impl Default for ContextLimits {
    fn default() -> Self {
        ContextLimits {
            subrequests: 50,
            wait_until: Duration::from_secs(30),
        }
    }
}

/// Why a request may not do what it asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, deno_error::JsError)]
pub enum ContextError {
    #[class(generic)]
    #[error("{0}")]
    Refused(String),
}

/// The contexts of one isolate.
#[derive(Debug)]
pub struct Contexts {
    map: HashMap<RequestId, Context>,
    /// Which context started each live timer.
    timer_owner: HashMap<u32, RequestId>,
    /// Timers of contexts that ended, for the isolate's owner to cancel.
    orphaned_timers: Vec<u32>,
    /// Work on other threads in progress (Web Crypto), by token: who asked and
    /// since when.
    offthread: HashMap<u32, (RequestId, Instant)>,
    next_token: u32,
    pub limits: ContextLimits,
    /// RPC stubs the requests hold (`rpc.rs`): they go with their request.
    pub stubs: super::rpc::StubSessions,
}

/// The table as it sits in an isolate's `OpState` and in its owner.
pub type SharedContexts = Rc<RefCell<Contexts>>;

impl Contexts {
    pub fn new(limits: ContextLimits) -> SharedContexts {
        Rc::new(RefCell::new(Contexts {
            map: HashMap::new(),
            timer_owner: HashMap::new(),
            orphaned_timers: Vec::new(),
            offthread: HashMap::new(),
            next_token: 0,
            limits,
            stubs: Default::default(),
        }))
    }

    /// A request is dispatched.
    pub fn begin(&mut self, id: RequestId, depth: u8, slot: Option<u32>) {
        if self.map.insert(id, Context::new(depth, slot)).is_none() {
            metrics::gauge!(LIVE_CONTEXTS).increment(1.0);
        }
    }

    pub fn get(&self, id: RequestId) -> Option<&Context> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: RequestId) -> Option<&mut Context> {
        self.map.get_mut(&id)
    }

    /// Contexts not yet ended.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The one context there is, if there is exactly one.
    pub fn only(&self) -> Option<RequestId> {
        if self.map.len() == 1 {
            self.map.keys().next().copied()
        } else {
            None
        }
    }

    /// The ids of the contexts not yet ended.
    pub fn ids(&self) -> Vec<RequestId> {
        self.map.keys().copied().collect()
    }

    /// The handler's outcome is known: the context ends now, or once its
    /// waitUntil work (and, in an object, its timers) are done.
    pub fn settle(&mut self, id: RequestId) {
        let wait = self.limits.wait_until;
        if let Some(c) = self.map.get_mut(&id) {
            c.settled = true;
            c.open_window(wait);
        }
        self.end_if_done(id);
    }

    /// Ends the context at once (its request was cancelled or failed).
    pub fn end(&mut self, id: RequestId) {
        if let Some(c) = self.map.remove(&id) {
            metrics::gauge!(LIVE_CONTEXTS).decrement(1.0);
            self.stubs.end_request(id);
            for t in c.timers {
                self.timer_owner.remove(&t);
                self.orphaned_timers.push(t);
            }
        }
    }

    fn end_if_done(&mut self, id: RequestId) {
        if self.map.get(&id).is_some_and(Context::done) {
            self.end(id);
        }
    }

    /// Whether a context of the Durable Object in `slot` is still streaming a
    /// response or holds an accepted WebSocket (the object must stay).
    pub fn slot_streaming(&self, slot: u32) -> bool {
        self.map
            .values()
            .any(|c| c.slot == Some(slot) && c.streams > 0)
    }

    /// Ends every context of the Durable Object in `slot` (it left the isolate).
    pub fn end_slot(&mut self, slot: u32) {
        let ids: Vec<RequestId> = self
            .map
            .iter()
            .filter(|(_, c)| c.slot == Some(slot))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end(id);
        }
    }

    /// Closes the waitUntil windows that are due; drops expired contexts after
    /// their grace period. Returns the ids that expired now (for the log).
    pub fn expire_due(&mut self, now: Instant) -> Vec<RequestId> {
        let mut expired = Vec::new();
        let mut gone = Vec::new();
        for (id, c) in &mut self.map {
            match (c.deadline, c.expired_at) {
                (Some(d), None) if now >= d => {
                    c.expired_at = Some(now);
                    expired.push(*id);
                }
                (_, Some(at)) if now.duration_since(at) >= EXPIRED_GRACE => gone.push(*id),
                _ => {}
            }
        }
        for id in gone.iter().chain(expired.iter()) {
            // An expired context's timers stop with it.
            if let Some(c) = self.map.get_mut(id) {
                for t in c.timers.drain() {
                    self.timer_owner.remove(&t);
                    self.orphaned_timers.push(t);
                }
            }
        }
        for id in gone {
            if self.map.remove(&id).is_some() {
                metrics::gauge!(LIVE_CONTEXTS).decrement(1.0);
                self.stubs.end_request(id);
            }
        }
        expired
    }

    /// The earliest waitUntil deadline not yet reached, for the owner's wake-up.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter(|c| c.expired_at.is_none())
            .filter_map(|c| c.deadline)
            .min()
    }

    /// Contexts that have used more than `limit` of CPU.
    pub fn over_cpu(&self, limit: Duration) -> Vec<RequestId> {
        self.map
            .iter()
            .filter(|(_, c)| c.cpu > limit)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Timers whose contexts ended; the owner cancels them in the isolate.
    pub fn take_orphaned_timers(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.orphaned_timers)
    }

    /// Checks that request `id` may start I/O named `api`.
    pub fn check_live(&self, id: Option<RequestId>, api: &str) -> Result<&Context, ContextError> {
        let Some(id) = id else {
            return Err(ContextError::Refused(GLOBAL_SCOPE.into()));
        };
        match self.map.get(&id) {
            Some(c) if c.live() => Ok(c),
            Some(_) => Err(ContextError::Refused(format!(
                "{api}: this request's ctx.waitUntil() time is over, so its remaining I/O was cancelled"
            ))),
            None => Err(ContextError::Refused(format!(
                "{api}: this request has ended (its response was sent and no ctx.waitUntil() work keeps it), so it cannot start I/O"
            ))),
        }
    }

    /// Counts one subrequest of `id` (a fetch, a service call, a Durable Object
    /// call) against the limit, refusing past it. Returns the context's depth.
    pub fn subrequest(&mut self, id: Option<RequestId>, api: &str) -> Result<u8, ContextError> {
        let limit = self.limits.subrequests;
        self.check_live(id, api)?;
        let Some(c) = id.and_then(|id| self.map.get_mut(&id)) else {
            return Err(ContextError::Refused(GLOBAL_SCOPE.into()));
        };
        if c.subrequests >= limit {
            return Err(ContextError::Refused(format!(
                "Too many subrequests. A request may make at most {limit} subrequests (fetch(), service binding and Durable Object calls)."
            )));
        }
        c.subrequests += 1;
        Ok(c.depth)
    }
}

impl Drop for Contexts {
    fn drop(&mut self) {
        // The isolate is gone, and its requests with it.
        if !self.map.is_empty() {
            metrics::gauge!(LIVE_CONTEXTS).decrement(self.map.len() as f64);
        }
    }
}

/// The request the running JavaScript works for, from V8 (see the module doc):
/// the context value is a BigInt of two words, the request id and, for an
/// event of a Durable Object, its slot plus one.
/// With `AsyncLocalStorage` in use the value is a frame, `[request, stores]`
/// (`node.rs`), whose request part is that BigInt.
fn current_value(scope: &mut v8::HandleScope) -> Option<(RequestId, Option<u32>)> {
    let frame = scope.get_continuation_preserved_embedder_data();
    let data = super::node::frame_request(scope, frame);
    let big = v8::Local::<v8::BigInt>::try_from(data).ok()?;
    let mut words = [0u64; 2];
    let (negative, _) = big.to_words_array(&mut words);
    if negative || words[0] == 0 {
        return None;
    }
    let slot = (words[1] > 0 && words[1] <= u32::MAX as u64 + 1).then(|| (words[1] - 1) as u32);
    Some((words[0], slot))
}

/// The id of the request the running JavaScript works for.
pub fn current(scope: &mut v8::HandleScope) -> Option<RequestId> {
    current_value(scope).map(|(id, _)| id)
}

/// Makes `id` (an event of the object in `slot`, if any) the current request
/// of the code that runs next in `scope`; returns the value to restore with
/// [`restore`].
pub fn enter<'s>(
    scope: &mut v8::HandleScope<'s>,
    id: RequestId,
    slot: Option<u32>,
) -> v8::Local<'s, v8::Value> {
    let previous = scope.get_continuation_preserved_embedder_data();
    let words = [id, slot.map(|s| s as u64 + 1).unwrap_or(0)];
    match v8::BigInt::new_from_words(scope, false, &words) {
        Some(value) => scope.set_continuation_preserved_embedder_data(value.into()),
        None => {
            let undefined = v8::undefined(scope).into();
            scope.set_continuation_preserved_embedder_data(undefined);
        }
    }
    previous
}

pub fn restore(scope: &mut v8::HandleScope, previous: v8::Local<v8::Value>) {
    scope.set_continuation_preserved_embedder_data(previous);
}

/// The contexts of the isolate `scope` belongs to.
pub fn contexts(state: &OpState) -> Option<SharedContexts> {
    state.try_borrow::<SharedContexts>().cloned()
}

/// For ops: the calling request's depth after counting one subrequest.
pub fn outgoing(scope: &mut v8::HandleScope, api: &str) -> Result<u8, ContextError> {
    let id = current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let table = contexts(&state.borrow())
        .ok_or_else(|| ContextError::Refused(format!("{api} is not available here")))?;
    let depth = table.borrow_mut().subrequest(id, api)?;
    if depth >= MAX_DEPTH {
        return Err(ContextError::Refused(format!(
            "Subrequest depth limit exceeded: more than {MAX_DEPTH} calls between workers or Durable Objects in one chain. This happens when a Worker or Durable Object calls other Workers or objects recursively."
        )));
    }
    Ok(depth + 1)
}

/// For ops: fails unless the calling request may start I/O.
pub fn assert_live(scope: &mut v8::HandleScope, api: &str) -> Result<(), ContextError> {
    let id = current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let table = contexts(&state.borrow())
        .ok_or_else(|| ContextError::Refused(format!("{api} is not available here")))?;
    let t = table.borrow();
    t.check_live(id, api).map(|_| ())
}

/// For ops: the Durable Object the calling code runs for. It stays valid after
/// the event that started the code has ended (an object's code may go on
/// using its storage); whether the object is still active is its host's to say.
pub fn current_slot(scope: &mut v8::HandleScope) -> Option<u32> {
    current_value(scope).and_then(|(_, slot)| slot)
}

/// `subrequest()` for outbound `fetch()`: counted and checked before deno's
/// fetch runs.
#[op2(nofast)]
pub fn op_edged_subrequest(
    scope: &mut v8::HandleScope,
    #[string] api: &str,
) -> Result<(), ContextError> {
    outgoing(scope, api).map(|_| ())
}

/// Fails unless the calling request may still start I/O.
#[op2(nofast)]
pub fn op_edged_assert_live(
    scope: &mut v8::HandleScope,
    #[string] api: &str,
) -> Result<(), ContextError> {
    assert_live(scope, api)
}

/// `ctx.waitUntil(p)` registered a promise (`settled == false`) or one of them
/// settled (`true`).
#[op2(nofast)]
pub fn op_edged_wait_until(scope: &mut v8::HandleScope, settled: bool) {
    with_current(scope, |t, id| {
        if let Some(c) = t.get_mut(id) {
            if settled {
                c.wait_until = c.wait_until.saturating_sub(1);
            } else {
                c.wait_until += 1;
            }
        }
        if settled {
            t.end_if_done(id);
        }
    });
}

/// Runs `f` on the context table and the calling request's id, if there
/// are both.
fn with_current(scope: &mut v8::HandleScope, f: impl FnOnce(&mut Contexts, RequestId)) {
    let Some(id) = current(scope) else {
        return;
    };
    let state = deno_core::JsRuntime::op_state_from(scope);
    let Some(table) = contexts(&state.borrow()) else {
        return;
    };
    f(&mut table.borrow_mut(), id);
}

/// The calling request started (`done == false`) or finished writing a
/// streamed response body.
#[op2(nofast)]
pub fn op_edged_response_stream(scope: &mut v8::HandleScope, done: bool) {
    with_current(scope, |t, id| {
        let wait = t.limits.wait_until;
        if let Some(c) = t.get_mut(id) {
            if done {
                c.streams = c.streams.saturating_sub(1);
                c.open_window(wait);
            } else {
                c.streams += 1;
            }
        }
        if done {
            t.end_if_done(id);
        }
    });
}

/// A timer was started by the calling request. `false`: no live request owns
/// it (the caller clears it at once). Outside any request, timers are refused
/// as Workers refuses them in the global scope.
#[op2(nofast)]
pub fn op_edged_timer_start(scope: &mut v8::HandleScope, timer: u32) -> Result<bool, ContextError> {
    let Some(id) = current(scope) else {
        return Err(ContextError::Refused(GLOBAL_SCOPE.into()));
    };
    let state = deno_core::JsRuntime::op_state_from(scope);
    let Some(table) = contexts(&state.borrow()) else {
        return Ok(false);
    };
    let mut t = table.borrow_mut();
    match t.map.get_mut(&id) {
        Some(c) if c.live() => {
            c.timers.insert(timer);
            t.timer_owner.insert(timer, id);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A timer is about to run its callback: may it? (Only while the request that
/// started it is live.) A timeout (`repeat == false`) is done once it fires.
#[op2(nofast)]
pub fn op_edged_timer_fire(scope: &mut v8::HandleScope, timer: u32, repeat: bool) -> bool {
    // The callback about to run is its request's CPU.
    if let Some(id) = current(scope) {
        super::cpu::switch_to(id);
    }
    let state = deno_core::JsRuntime::op_state_from(scope);
    let Some(table) = contexts(&state.borrow()) else {
        return false;
    };
    let mut t = table.borrow_mut();
    let Some(owner) = t.timer_owner.get(&timer).copied() else {
        return false;
    };
    let live = t.map.get(&owner).is_some_and(Context::live);
    if !repeat || !live {
        t.timer_owner.remove(&timer);
        if let Some(c) = t.map.get_mut(&owner) {
            c.timers.remove(&timer);
        }
        t.end_if_done(owner);
    }
    live
}

/// Work for the calling request starts on another thread (Web Crypto): its
/// time there counts as the request's CPU. Returns a token for the end.
#[op2(nofast)]
pub fn op_edged_offthread_begin(scope: &mut v8::HandleScope) -> u32 {
    let Some(id) = current(scope) else {
        return 0;
    };
    let state = deno_core::JsRuntime::op_state_from(scope);
    let Some(table) = contexts(&state.borrow()) else {
        return 0;
    };
    let mut t = table.borrow_mut();
    t.next_token = t.next_token.wrapping_add(1).max(1);
    let token = t.next_token;
    t.offthread.insert(token, (id, Instant::now()));
    token
}

/// The work `token` named is done: its wall time (the work is CPU-bound on a
/// blocking thread; this is the measure the runtime has of it) is charged to
/// the request that started it.
#[op2(fast)]
pub fn op_edged_offthread_end(state: &mut OpState, token: u32) {
    let Some(table) = contexts(state) else {
        return;
    };
    let mut t = table.borrow_mut();
    if let Some((id, since)) = t.offthread.remove(&token) {
        if let Some(c) = t.map.get_mut(&id) {
            c.cpu += since.elapsed();
        }
    }
}

/// A timer was cleared.
#[op2(fast)]
pub fn op_edged_timer_clear(state: &mut OpState, timer: u32) {
    let Some(table) = contexts(state) else {
        return;
    };
    let mut t = table.borrow_mut();
    if let Some(owner) = t.timer_owner.remove(&timer) {
        if let Some(c) = t.map.get_mut(&owner) {
            c.timers.remove(&timer);
        }
        t.end_if_done(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subrequests_are_counted_per_request() {
        let table = Contexts::new(ContextLimits {
            subrequests: 2,
            ..Default::default()
        });
        let mut t = table.borrow_mut();
        t.begin(1, 3, None);
        t.begin(2, 0, None);
        assert_eq!(t.subrequest(Some(1), "fetch()"), Ok(3));
        assert_eq!(t.subrequest(Some(1), "fetch()"), Ok(3));
        assert!(t.subrequest(Some(1), "fetch()").is_err());
        assert_eq!(t.subrequest(Some(2), "fetch()"), Ok(0));
        assert!(t.subrequest(None, "fetch()").is_err());
        assert!(t.subrequest(Some(9), "fetch()").is_err());
    }

    #[test]
    fn contexts_end_after_wait_until_and_expire_at_the_deadline() {
        let table = Contexts::new(ContextLimits {
            subrequests: 5,
            wait_until: Duration::from_millis(10),
        });
        let mut t = table.borrow_mut();
        t.begin(1, 0, None);
        t.get_mut(1).unwrap().wait_until = 1;
        t.get_mut(1).unwrap().timers.insert(7);
        t.timer_owner.insert(7, 1);
        t.settle(1);
        assert!(t.get(1).is_some(), "waitUntil work keeps it");
        let later = Instant::now() + Duration::from_millis(20);
        assert_eq!(t.expire_due(later), vec![1]);
        assert!(t.check_live(Some(1), "fetch()").is_err());
        assert_eq!(t.take_orphaned_timers(), vec![7]);
        t.begin(2, 0, None);
        t.settle(2);
        assert!(t.get(2).is_none(), "nothing pending: ended at once");
    }

    #[test]
    fn object_contexts_linger_while_their_timers_run() {
        let table = Contexts::new(ContextLimits::default());
        let mut t = table.borrow_mut();
        t.begin(5, 1, Some(3));
        t.get_mut(5).unwrap().timers.insert(9);
        t.timer_owner.insert(9, 5);
        t.settle(5);
        assert!(t.get(5).is_some());
        t.end_slot(3);
        assert!(t.get(5).is_none());
        assert_eq!(t.take_orphaned_timers(), vec![9]);
    }
}
