//! Objects passed by reference over JS RPC (`RpcTarget`s and functions), the
//! Rust half of `runtime/25_rpc.js`.
//!
//! A callee that returns targets answers with [`RpcExports`]: the id of the
//! *session* its JS opened for that result and how many targets it holds.
//! Whoever delivered the call attaches the [`StubRoute`] that reaches the same
//! callee again: the isolate that answered (a service binding, set by the
//! actors layer) or the object's address (a Durable Object, set here). The
//! caller keeps session, count and route in a [`StubSession`], owned by the
//! calling request and kept in its isolate's [`StubSessions`]; JS gets only a
//! resource id of it.
//!
//! Invariants:
//! - a stub's route and session come from Rust, never from JS: a caller names
//!   a session only by the resource id it was given, and only the request
//!   that made the call may use it (Workers' "different request" rule);
//! - a session id indexes the callee's own table (its isolate's, or one
//!   object's), so the callee cannot point a caller at anyone else's targets;
//! - when the calling request ends, every session it still holds is disposed
//!   (`Drop`), so the callee's targets never outlive their callers by more
//!   than a request; a call on a stub counts as a subrequest of its caller.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use deno_core::{op2, v8, JsBuffer, ToJsBuffer};

use super::body::Body;
use super::context::RequestId;
use super::durable::{DurableObjectBackend, ObjectAddress, ObjectFuture};
use super::error::InvokeError;
use super::script::{InvokeRequest, InvokeResponse};

/// The targets an RPC answer passed by reference: the callee's session and
/// how many, plus the way back to the callee (set by whoever delivered the
/// call; `None` until then).
#[derive(Clone)]
pub struct RpcExports {
    pub session: u64,
    pub count: u32,
    pub route: Option<Arc<dyn StubRoute>>,
}

impl std::fmt::Debug for RpcExports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcExports")
            .field("session", &self.session)
            .field("count", &self.count)
            .field("routed", &self.route.is_some())
            .finish()
    }
}

/// The way to the isolate or object that exported a session.
pub trait StubRoute: Send + Sync {
    /// Delivers one event (a call on a target, or a property read). An answer
    /// with exports of its own comes back routed the same way.
    fn invoke(&self, request: InvokeRequest) -> ObjectFuture;
    /// Delivers an event whose answer nobody waits for (a disposal).
    fn notify(&self, request: InvokeRequest);
}

/// A Durable Object's targets are reached through the object itself (its
/// mailbox and gates, on whichever PoP owns it).
pub struct ObjectRoute {
    pub backend: Arc<dyn DurableObjectBackend>,
    pub address: ObjectAddress,
    pub hint: Option<String>,
}

impl StubRoute for ObjectRoute {
    fn invoke(&self, request: InvokeRequest) -> ObjectFuture {
        self.backend
            .invoke_hinted(self.address.clone(), self.hint.clone(), 0, request)
    }

    fn notify(&self, request: InvokeRequest) {
        // Outside a runtime (a test's drop) there is nobody to tell.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let call = self.invoke(request);
            handle.spawn(async move {
                let _ = call.await;
            });
        }
    }
}

/// The runtime event of a call on a stub (`kind`: `call` or `get`).
pub fn stub_event(kind: &str, session: u64, index: u32, name: &str) -> String {
    format!("rpc-{kind}:{session}:{index}:{name}")
}

/// A disposal travels at the depth of the call that returned the targets,
/// so that disposers calling others cannot chain past [`super::service::MAX_DEPTH`].
fn dispose_request(session: u64, index: Option<u32>, depth: u8) -> InvokeRequest {
    let index = index.map_or_else(|| "*".to_owned(), |i| i.to_string());
    InvokeRequest {
        method: "RPC".into(),
        url: format!("rpc-dispose:{session}:{index}"),
        headers: Vec::new(),
        body: None,
        depth,
        cancel: Default::default(),
        entrypoint: None,
        props: None,
        cf: None,
    }
}

/// A caller's hold on one exported session.
pub struct StubSession {
    owner: RequestId,
    session: u64,
    /// The depth of the call that returned it (its calls and disposal go
    /// one deeper, like any call the caller makes).
    depth: u8,
    /// Per target: not yet disposed.
    open: Vec<bool>,
    route: Arc<dyn StubRoute>,
}

impl Drop for StubSession {
    fn drop(&mut self) {
        if self.open.iter().any(|o| *o) {
            self.route
                .notify(dispose_request(self.session, None, self.depth));
        }
    }
}

/// The stub sessions held by the requests of one isolate (kept with its
/// request contexts: a context that ends drops its sessions).
#[derive(Default)]
pub struct StubSessions {
    next: u32,
    map: HashMap<u32, StubSession>,
    /// The sessions of each request.
    by_owner: HashMap<RequestId, Vec<u32>>,
}

impl std::fmt::Debug for StubSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StubSessions({} held)", self.map.len())
    }
}

/// Targets one answer may pass by reference (the callee's JS checks it too).
const MAX_TARGETS: u32 = 10_000;

/// Sessions one request may hold at once (each came from a call, which its
/// subrequest limit bounds too).
const MAX_PER_REQUEST: usize = 1000;

impl StubSessions {
    /// Keeps `exports` for request `owner`; the resource id JS names it by.
    pub fn add(
        &mut self,
        owner: RequestId,
        depth: u8,
        exports: RpcExports,
        route: Arc<dyn StubRoute>,
    ) -> Result<u32, String> {
        let session = StubSession {
            owner,
            session: exports.session,
            depth,
            open: vec![true; exports.count as usize],
            route,
        };
        let held = self.by_owner.entry(owner).or_default();
        if held.len() >= MAX_PER_REQUEST {
            // Dropping the session disposes it at once.
            return Err(format!(
                "a request may hold at most {MAX_PER_REQUEST} RPC results with stubs"
            ));
        }
        self.next = self.next.wrapping_add(1).max(1);
        while self.map.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1).max(1);
        }
        held.push(self.next);
        self.map.insert(self.next, session);
        Ok(self.next)
    }

    /// Drops (and so disposes) every session of request `owner`.
    pub fn end_request(&mut self, owner: RequestId) {
        for rid in self.by_owner.remove(&owner).unwrap_or_default() {
            self.map.remove(&rid);
        }
    }

    /// Forgets a session whose targets were all disposed one by one.
    fn remove(&mut self, rid: u32) {
        if let Some(s) = self.map.remove(&rid) {
            if let Some(held) = self.by_owner.get_mut(&s.owner) {
                held.retain(|r| *r != rid);
                if held.is_empty() {
                    self.by_owner.remove(&s.owner);
                }
            }
        }
    }

    fn get(&self, rid: u32, caller: Option<RequestId>) -> Result<&StubSession, RpcError> {
        let session = self
            .map
            .get(&rid)
            .ok_or_else(|| RpcError::Failed(DISPOSED.into()))?;
        if Some(session.owner) != caller {
            return Err(RpcError::Failed(OTHER_REQUEST.into()));
        }
        Ok(session)
    }
}

const DISPOSED: &str = "Attempted to use RPC stub after it has been disposed.";
/// Workers' message for I/O objects used outside the request that made them.
const OTHER_REQUEST: &str = "Cannot perform I/O on behalf of a different request. I/O objects (such as streams, request/response bodies, and others) created in the context of one request handler cannot be accessed from a different request's handler. This is a limitation of Cloudflare Workers which allows us to improve overall performance.";

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum RpcError {
    #[class(type)]
    #[error("{0}")]
    Invalid(String),
    #[class(generic)]
    #[error("{0}")]
    Failed(String),
}

/// What an RPC call resolves to in JS: the structured-clone bytes, and when
/// the answer passed targets by reference, the session's resource id and
/// their count.
pub type Answer = (ToJsBuffer, Option<u32>, u32);

/// Turns a callee's answer into what JS gets, keeping its session (if any)
/// for request `owner` with `route` (or the one the answer came with).
pub fn answer(
    contexts: Option<&super::context::SharedContexts>,
    owner: Option<RequestId>,
    depth: u8,
    response: InvokeResponse,
    route: Option<Arc<dyn StubRoute>>,
) -> Result<Answer, String> {
    let bytes = ToJsBuffer::from(
        response
            .body
            .and_then(|b| b.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default(),
    );
    let Some(exports) = response.rpc else {
        return Ok((bytes, None, 0));
    };
    let count = exports.count;
    let route = route
        .or_else(|| exports.route.clone())
        .ok_or("internal: an RPC answer with stubs came without a route")?;
    if count > MAX_TARGETS {
        route.notify(dispose_request(exports.session, None, depth));
        return Err(format!(
            "an RPC result may pass at most {MAX_TARGETS} RpcTargets and functions by reference"
        ));
    }
    // The calling request must still be there to hold the stubs (it may
    // have ended while the call ran: not awaited, or its client left);
    // otherwise the targets are let go at once.
    let held = match (contexts, owner) {
        (Some(contexts), Some(owner)) if contexts.borrow().get(owner).is_some() => {
            Some((contexts, owner))
        }
        _ => None,
    };
    let Some((contexts, owner)) = held else {
        route.notify(dispose_request(exports.session, None, depth));
        return Err("the request that made this RPC call has ended".into());
    };
    let rid = contexts
        .borrow_mut()
        .stubs
        .add(owner, depth, exports, route)?;
    Ok((bytes, Some(rid), count))
}

/// A call on a stub (`kind` 0: `stub.name(...args)`, or the stub itself
/// when `name` is empty; 1: `await stub.name`).
#[op2(async)]
#[serde]
pub fn op_rpc_stub_call(
    scope: &mut v8::HandleScope,
    rid: u32,
    index: u32,
    kind: u8,
    #[string] name: String,
    #[buffer] args: Option<JsBuffer>,
) -> impl Future<Output = Result<Answer, RpcError>> {
    let caller = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let contexts = super::context::contexts(&state.borrow());
    let target = (|| {
        let contexts = contexts
            .as_ref()
            .ok_or_else(|| RpcError::Invalid("RPC stubs are not available here".into()))?;
        let (session, route) = {
            let sessions = &contexts.borrow().stubs;
            let s = sessions.get(rid, caller)?;
            if !s.open.get(index as usize).copied().unwrap_or(false) {
                return Err(RpcError::Failed(DISPOSED.into()));
            }
            (s.session, s.route.clone())
        };
        let depth = super::context::outgoing(scope, "RPC stub call")
            .map_err(|e| RpcError::Failed(e.to_string()))?;
        Ok((session, route, depth))
    })();
    let args = args.map(|a| bytes::Bytes::copy_from_slice(&a));
    async move {
        let (session, route, depth) = target?;
        let event = if kind == 1 { "get" } else { "call" };
        let request = InvokeRequest {
            method: "RPC".into(),
            url: stub_event(event, session, index, &name),
            headers: Vec::new(),
            body: args.map(Body::Bytes),
            depth,
            cancel: Default::default(),
            entrypoint: None,
            props: None,
            cf: None,
        };
        let response = route.invoke(request).await.map_err(|e| match e {
            InvokeError::Exception(stack) => {
                RpcError::Failed(super::error::remote_exception(&stack))
            }
            other => RpcError::Failed(format!("RPC stub call failed: {other}")),
        })?;
        answer(contexts.as_ref(), caller, depth, response, Some(route)).map_err(RpcError::Failed)
    }
}

/// The last JS stub of target `index` was disposed.
#[op2(fast)]
pub fn op_rpc_stub_dispose(scope: &mut v8::HandleScope, rid: u32, index: u32) {
    let caller = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let Some(contexts) = super::context::contexts(&state.borrow()) else {
        return;
    };
    let mut contexts = contexts.borrow_mut();
    let sessions = &mut contexts.stubs;
    let Some(s) = sessions
        .map
        .get_mut(&rid)
        .filter(|s| Some(s.owner) == caller)
    else {
        return;
    };
    match s.open.get_mut(index as usize) {
        Some(open) if *open => *open = false,
        _ => return,
    }
    let (session, route, depth) = (s.session, s.route.clone(), s.depth);
    if s.open.iter().all(|o| !*o) {
        sessions.remove(rid);
    }
    route.notify(dispose_request(session, Some(index), depth));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl StubRoute for Recorder {
        fn invoke(&self, request: InvokeRequest) -> ObjectFuture {
            self.0.lock().unwrap().push(request.url);
            Box::pin(async { Err(InvokeError::Stopping) })
        }
        fn notify(&self, request: InvokeRequest) {
            self.0.lock().unwrap().push(request.url);
        }
    }

    #[test]
    fn a_request_ending_disposes_the_sessions_it_holds_and_only_those() {
        let route = Arc::new(Recorder::default());
        let mut sessions = StubSessions::default();
        let exports = |session| RpcExports {
            session,
            count: 2,
            route: None,
        };
        let a = sessions.add(1, 1, exports(7), route.clone()).unwrap();
        let b = sessions.add(2, 1, exports(8), route.clone()).unwrap();
        assert_ne!(a, b);
        assert!(sessions.get(a, Some(1)).is_ok());
        // Another request may not use it.
        assert!(
            matches!(sessions.get(a, Some(2)), Err(RpcError::Failed(m)) if m.contains("different request"))
        );
        sessions.end_request(1);
        assert_eq!(*route.0.lock().unwrap(), vec!["rpc-dispose:7:*".to_owned()]);
        assert!(sessions.get(a, Some(1)).is_err());
        assert!(sessions.get(b, Some(2)).is_ok());
    }

    #[test]
    fn a_request_holds_a_bounded_number_of_sessions() {
        let route = Arc::new(Recorder::default());
        let mut sessions = StubSessions::default();
        for i in 0..MAX_PER_REQUEST as u64 {
            let e = RpcExports {
                session: i,
                count: 1,
                route: None,
            };
            sessions.add(5, 1, e, route.clone()).unwrap();
        }
        let e = RpcExports {
            session: 9999,
            count: 1,
            route: None,
        };
        assert!(sessions.add(5, 1, e, route.clone()).is_err());
        // The refused one was disposed at once.
        assert_eq!(
            route.0.lock().unwrap().last().map(String::as_str),
            Some("rpc-dispose:9999:*")
        );
    }
}
