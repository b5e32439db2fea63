//! WebSockets across the engine boundary: a socket is two [`WsEnd`]s joined by
//! a pair of bounded queues, whatever holds each end.
//!
//! Design. `new WebSocketPair()` makes two ends in the isolate's socket table
//! (`Sockets` in its `OpState`). An end the worker `accept()`s is read by a JS
//! loop over `op_ws_recv`; an end it returns in `new Response(null, {status:
//! 101, webSocket})` leaves the isolate with the response
//! ([`InvokeResponse::websocket`](super::InvokeResponse)) and is picked up by
//! whoever called: another isolate (a service binding or a Durable Object's
//! `stub.fetch()`, which puts it into its own table unchanged), or the data
//! plane, which joins it to the client's connection. Either way nothing is
//! copied between the two ends: a message sent at one end is read at the
//! other. The same holds for the remote hop of the cluster: an end is plain
//! Rust data with no tie to an isolate, so a relay over the peer link can hold
//! it like the data plane does.
//!
//! Bounds. A direction queues at most [`QUEUE_BYTES`]: `send()` from JS (which
//! is synchronous, as in Workers) throws past it rather than buffer without
//! limit; the network side waits ([`WsEnd::send`]) while more than
//! [`BACKPRESSURE_BYTES`] are queued, so a worker that reads slowly slows its
//! client down instead of growing memory. A message is at most
//! [`MAX_MESSAGE`] (Workers' 1 MiB); the data plane closes a client's socket
//! that sends a bigger one with 1009. An isolate holds at most its table's cap
//! of sockets.
//!
//! Ends vanish safely: a dropped end makes its peer read [`None`] (the other
//! side went away without a close, 1006 to JS).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use deno_core::{op2, v8, OpState, ToJsBuffer};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

/// The largest message either way (Workers' limit).
pub const MAX_MESSAGE: usize = 1 << 20;

/// Bytes one direction may hold queued before `send()` from JS throws.
pub const QUEUE_BYTES: usize = 16 << 20;

/// Queued bytes past which the network side waits before queueing more.
pub const BACKPRESSURE_BYTES: usize = 1 << 20;

/// Sockets open in isolates on the node (both ends of a pair count).
pub const SOCKETS: &str = "edged_websocket_ends";

/// One WebSocket message, or the close that ends a direction.
#[derive(Debug, Clone, PartialEq)]
pub enum WsMessage {
    Text(String),
    Binary(Bytes),
    /// A close frame: code (1005 for "no code") and reason.
    Close(u16, String),
}

impl WsMessage {
    fn size(&self) -> usize {
        match self {
            WsMessage::Text(s) => s.len(),
            WsMessage::Binary(b) => b.len(),
            WsMessage::Close(_, r) => r.len() + 2,
        }
    }
}

/// The bytes queued in one direction, and a wake-up for a waiting writer.
#[derive(Default)]
struct Budget {
    queued: AtomicUsize,
    room: Notify,
}

/// Why a message was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The other end is gone.
    Closed,
    /// [`QUEUE_BYTES`] are already queued.
    Full,
}

/// The sending half of an end.
#[derive(Clone)]
pub struct WsSender {
    tx: mpsc::UnboundedSender<WsMessage>,
    budget: Arc<Budget>,
}

impl WsSender {
    /// Queues a message now, or refuses it (JS's `send()`).
    pub fn try_send(&self, msg: WsMessage) -> Result<(), SendError> {
        if self.tx.is_closed() {
            return Err(SendError::Closed);
        }
        let n = msg.size();
        if self.budget.queued.fetch_add(n, Ordering::AcqRel) + n > QUEUE_BYTES {
            self.budget.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(SendError::Full);
        }
        self.tx.send(msg).map_err(|_| {
            self.budget.queued.fetch_sub(n, Ordering::AcqRel);
            SendError::Closed
        })
    }

    /// Queues a message once fewer than [`BACKPRESSURE_BYTES`] are queued (the
    /// network side: a slow reader slows the sender down).
    pub async fn send(&self, msg: WsMessage) -> Result<(), SendError> {
        loop {
            let room = self.budget.room.notified();
            if self.budget.queued.load(Ordering::Acquire) < BACKPRESSURE_BYTES {
                break;
            }
            if self.tx.is_closed() {
                return Err(SendError::Closed);
            }
            room.await;
        }
        let n = msg.size();
        self.budget.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.send(msg).map_err(|_| {
            self.budget.queued.fetch_sub(n, Ordering::AcqRel);
            SendError::Closed
        })
    }

    /// Whether the other end is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The receiving half of an end.
pub struct WsReceiver {
    rx: mpsc::UnboundedReceiver<WsMessage>,
    budget: Arc<Budget>,
}

impl WsReceiver {
    /// The next message from the other end; `None` once it is gone.
    pub async fn recv(&mut self) -> Option<WsMessage> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<WsMessage>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(m)) = &polled {
            self.budget.queued.fetch_sub(m.size(), Ordering::AcqRel);
            self.budget.room.notify_waiters();
        }
        polled
    }
}

impl Drop for WsReceiver {
    fn drop(&mut self) {
        // A writer waiting for room must see that nobody will read.
        self.rx.close();
        self.budget.room.notify_waiters();
    }
}

/// One end of a socket: what it sends arrives at the other end.
pub struct WsEnd {
    pub tx: WsSender,
    pub rx: WsReceiver,
}

impl std::fmt::Debug for WsEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsEnd")
    }
}

/// Two joined ends.
pub fn pair() -> (WsEnd, WsEnd) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    let ab = Arc::new(Budget::default());
    let ba = Arc::new(Budget::default());
    (
        WsEnd {
            tx: WsSender {
                tx: a_tx,
                budget: ab.clone(),
            },
            rx: WsReceiver {
                rx: a_rx,
                budget: ba.clone(),
            },
        },
        WsEnd {
            tx: WsSender {
                tx: b_tx,
                budget: ba,
            },
            rx: WsReceiver {
                rx: b_rx,
                budget: ab,
            },
        },
    )
}

/// An end that can be handed over once (in an `InvokeResponse`, which is
/// cloned when a request is retried).
#[derive(Debug, Clone)]
pub struct SocketSlot(Arc<Mutex<Option<WsEnd>>>);

impl SocketSlot {
    pub fn new(end: WsEnd) -> Self {
        SocketSlot(Arc::new(Mutex::new(Some(end))))
    }

    pub fn take(&self) -> Option<WsEnd> {
        self.0.lock().take()
    }
}

/// An end held by an isolate.
struct Socket {
    /// `accept()` was called: a read loop owns the end until it is released.
    accepted: Cell<bool>,
    tx: WsSender,
    /// Taken by the read loop while it waits (one reader at a time).
    rx: RefCell<Option<WsReceiver>>,
    /// The other end, when the pair was made in this isolate: while it is
    /// still here, messages between the two never refresh a CPU budget.
    peer: Cell<Option<u32>>,
    /// Counted in [`SOCKETS`] until dropped.
    _counted: Counted,
}

struct Counted;

impl Counted {
    fn new() -> Self {
        metrics::gauge!(SOCKETS).increment(1.0);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(SOCKETS).decrement(1.0);
    }
}

/// The sockets of one isolate, by id.
pub struct Sockets {
    map: HashMap<u32, Rc<Socket>>,
    /// Ends not yet accepted, by the request that made or received them.
    pending: HashMap<super::context::RequestId, Vec<u32>>,
    next: u32,
    cap: usize,
    /// Ends the isolate holds; read by its owner (an isolate holding sockets is
    /// not reaped as idle).
    held: Rc<Cell<usize>>,
}

impl Sockets {
    pub fn new(cap: usize) -> Self {
        Sockets {
            map: HashMap::new(),
            pending: HashMap::new(),
            next: 1,
            cap,
            held: Rc::new(Cell::new(0)),
        }
    }

    /// How many ends the isolate holds, kept up to date.
    pub fn held(&self) -> Rc<Cell<usize>> {
        self.held.clone()
    }

    fn insert(
        &mut self,
        end: WsEnd,
        owner: Option<super::context::RequestId>,
    ) -> Result<u32, WsError> {
        if self.map.len() >= self.cap {
            return Err(WsError::Limit(self.cap));
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        if let Some(owner) = owner {
            self.pending.entry(owner).or_default().push(id);
        }
        self.map.insert(
            id,
            Rc::new(Socket {
                accepted: Cell::new(false),
                tx: end.tx,
                rx: RefCell::new(Some(end.rx)),
                peer: Cell::new(None),
                _counted: Counted::new(),
            }),
        );
        self.held.set(self.map.len());
        Ok(id)
    }

    fn remove(&mut self, id: u32) -> Option<Rc<Socket>> {
        let s = self.map.remove(&id);
        self.held.set(self.map.len());
        s
    }
}

fn table(state: &mut OpState) -> &mut Sockets {
    if !state.has::<Sockets>() {
        state.put(Sockets::new(DEFAULT_CAP));
    }
    state.borrow_mut::<Sockets>()
}

/// Sockets per isolate when the owner set no cap.
pub const DEFAULT_CAP: usize = 10_000;

/// Puts an end that arrived from elsewhere into the isolate's table, for the
/// request `owner` (it is let go when that request's handler is done, unless
/// accepted or returned by then).
pub fn add_socket(
    state: &mut OpState,
    end: WsEnd,
    owner: Option<super::context::RequestId>,
) -> Result<u32, WsError> {
    table(state).insert(end, owner)
}

/// A 101 response's end from another isolate, put into this one's table.
pub fn into_js(
    state: &RefCell<OpState>,
    slot: Option<SocketSlot>,
    owner: Option<super::context::RequestId>,
) -> Result<Option<u32>, WsError> {
    match slot.and_then(|s| s.take()) {
        Some(end) => add_socket(&mut state.borrow_mut(), end, owner).map(Some),
        None => Ok(None),
    }
}

/// The handler of request `owner` is done: the ends it made or received and
/// neither accepted nor returned in its response are dropped (their peers see
/// the socket go away), so an unused `WebSocketPair` does not hold memory.
pub fn sweep(state: &mut OpState, owner: super::context::RequestId) {
    let Some(t) = state.try_borrow_mut::<Sockets>() else {
        return;
    };
    let Some(ids) = t.pending.remove(&owner) else {
        return;
    };
    for id in ids {
        if t.map.get(&id).is_some_and(|s| !s.accepted.get()) {
            t.remove(id);
        }
    }
}

/// Whether the other end of `id`'s pair is still in this isolate, neither
/// accepted nor handed on (`ctx.acceptWebSocket` needs it so, as in workerd:
/// one pair cannot have both ends held by the runtime). An end whose pair
/// was made elsewhere passes.
pub fn peer_waiting(state: &mut OpState, id: u32) -> bool {
    let t = table(state);
    match t.map.get(&id).and_then(|s| s.peer.get()) {
        None => true,
        Some(p) => t.map.get(&p).is_some_and(|s| !s.accepted.get()),
    }
}

/// Takes an end out of the isolate (it leaves with a response). `None` if it
/// is unknown or a read loop holds it (it was accepted).
pub fn take_socket(state: &mut OpState, id: u32) -> Option<WsEnd> {
    let t = table(state);
    let socket = t.map.get(&id)?;
    if socket.accepted.get() || socket.rx.borrow().is_none() || Rc::strong_count(socket) != 1 {
        return None;
    }
    let socket = Rc::try_unwrap(t.remove(id)?).ok()?;
    let rx = socket.rx.into_inner()?;
    Some(WsEnd { tx: socket.tx, rx })
}

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum WsError {
    #[class(type)]
    #[error("Too many open WebSockets in this isolate (the limit is {0}).")]
    Limit(usize),
    #[class(type)]
    #[error("WebSocket send() buffered more than {0} bytes that the other end has not read yet.")]
    Full(usize),
    #[class(type)]
    #[error("WebSocket message is too large: {0} bytes (the limit is {MAX_MESSAGE}).")]
    TooLarge(usize),
}

/// `new WebSocketPair()`: two joined ends, for the calling request.
#[op2]
#[serde]
pub fn op_ws_pair(scope: &mut v8::HandleScope) -> Result<(u32, u32), WsError> {
    let owner = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let mut state = state.borrow_mut();
    let (a, b) = pair();
    let t = table(&mut state);
    if t.map.len() + 2 > t.cap {
        return Err(WsError::Limit(t.cap));
    }
    let (ia, ib) = (t.insert(a, owner)?, t.insert(b, owner)?);
    for (me, other) in [(ia, ib), (ib, ia)] {
        if let Some(s) = t.map.get(&me) {
            s.peer.set(Some(other));
        }
    }
    Ok((ia, ib))
}

/// `accept()`: the end stays until its read loop releases it.
#[op2(fast)]
pub fn op_ws_accept(state: &mut OpState, #[smi] id: u32) {
    if let Some(s) = table(state).map.get(&id) {
        s.accepted.set(true);
    }
}

fn send(state: &mut OpState, id: u32, msg: WsMessage) -> Result<(), WsError> {
    let Some(socket) = table(state).map.get(&id) else {
        // Ignored after the socket is gone, as the spec says.
        return Ok(());
    };
    match socket.tx.try_send(msg) {
        Ok(()) | Err(SendError::Closed) => Ok(()),
        Err(SendError::Full) => Err(WsError::Full(QUEUE_BYTES)),
    }
}

#[op2(fast)]
pub fn op_ws_send_text(
    state: &mut OpState,
    #[smi] id: u32,
    #[string] text: String,
) -> Result<(), WsError> {
    if text.len() > MAX_MESSAGE {
        return Err(WsError::TooLarge(text.len()));
    }
    send(state, id, WsMessage::Text(text))
}

#[op2(fast)]
pub fn op_ws_send_binary(
    state: &mut OpState,
    #[smi] id: u32,
    #[buffer] data: &[u8],
) -> Result<(), WsError> {
    if data.len() > MAX_MESSAGE {
        return Err(WsError::TooLarge(data.len()));
    }
    send(state, id, WsMessage::Binary(Bytes::copy_from_slice(data)))
}

/// Sends the close frame (code 1005: none).
#[op2(fast)]
pub fn op_ws_close(
    state: &mut OpState,
    #[smi] id: u32,
    #[smi] code: u32,
    #[string] reason: String,
) -> Result<(), WsError> {
    send(state, id, WsMessage::Close(code as u16, reason))
}

/// Forgets an end (both directions are closed, or the worker let it go).
#[op2(fast)]
pub fn op_ws_release(state: &mut OpState, #[smi] id: u32) {
    table(state).remove(id);
}

/// A message arrived for the calling request's accepted socket `rid`: the
/// CPU limit applies per message from here on, as for a Durable Object's
/// events in Workers (a socket open for hours is not held to one request's
/// budget). Only a message from outside the isolate refreshes it: two ends
/// of one pair both still here would otherwise let a worker bounce messages
/// to itself for ever on fresh budgets.
#[op2(nofast)]
pub fn op_ws_message(scope: &mut v8::HandleScope, #[smi] rid: u32) {
    let Some(id) = super::context::current(scope) else {
        return;
    };
    let state = deno_core::JsRuntime::op_state_from(scope);
    {
        let mut st = state.borrow_mut();
        let t = table(&mut st);
        let local_peer = t
            .map
            .get(&rid)
            .and_then(|s| s.peer.get())
            .is_some_and(|p| t.map.contains_key(&p));
        if local_peer {
            return;
        }
    }
    let Some(table) = super::context::contexts(&state.borrow()) else {
        return;
    };
    let mut table = table.borrow_mut();
    if let Some(c) = table.get_mut(id) {
        c.cpu = std::time::Duration::ZERO;
    }
}

/// What the read loop gets: `(0, text)`, `(1, bytes)`, `(2, reason, code)`
/// for a close frame, `(3)` when the other end went away without one.
type Received = (u8, Option<String>, Option<ToJsBuffer>, u16);

/// The next message for an accepted end.
#[op2(async)]
#[serde]
pub async fn op_ws_recv(state: Rc<RefCell<OpState>>, #[smi] id: u32) -> Received {
    let socket = table(&mut state.borrow_mut()).map.get(&id).cloned();
    let Some(socket) = socket else {
        return (3, None, None, 1006);
    };
    let Some(mut rx) = socket.rx.borrow_mut().take() else {
        return (3, None, None, 1006);
    };
    let msg = rx.recv().await;
    *socket.rx.borrow_mut() = Some(rx);
    match msg {
        Some(WsMessage::Text(t)) => (0, Some(t), None, 0),
        Some(WsMessage::Binary(b)) => (1, None, Some(ToJsBuffer::from(b.to_vec())), 0),
        Some(WsMessage::Close(code, reason)) => (2, Some(reason), None, code),
        None => (3, None, None, 1006),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ends_talk_and_bound_what_they_queue() {
        let (a, mut b) = pair();
        a.tx.try_send(WsMessage::Text("hi".into())).unwrap();
        assert_eq!(b.rx.recv().await, Some(WsMessage::Text("hi".into())));
        let big = Bytes::from(vec![0u8; MAX_MESSAGE]);
        for _ in 0..16 {
            a.tx.try_send(WsMessage::Binary(big.clone())).unwrap();
        }
        assert_eq!(
            a.tx.try_send(WsMessage::Binary(big.clone())),
            Err(SendError::Full)
        );
        // Reading makes room again.
        b.rx.recv().await.unwrap();
        a.tx.try_send(WsMessage::Binary(big)).unwrap();
        drop(b);
        assert_eq!(
            a.tx.try_send(WsMessage::Text("x".into())),
            Err(SendError::Closed)
        );
    }

    #[tokio::test]
    async fn a_slow_reader_holds_the_network_side_back() {
        let (a, mut b) = pair();
        let chunk = Bytes::from(vec![0u8; BACKPRESSURE_BYTES]);
        a.tx.send(WsMessage::Binary(chunk.clone())).await.unwrap();
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            a.tx.send(WsMessage::Binary(chunk.clone())),
        )
        .await;
        assert!(blocked.is_err(), "the second send waits for the reader");
        b.rx.recv().await.unwrap();
        a.tx.send(WsMessage::Binary(chunk)).await.unwrap();
        drop(b);
        let mut a = a;
        assert_eq!(a.rx.recv().await, None);
    }
}
