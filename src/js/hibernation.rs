//! Hibernatable WebSockets: the sockets a Durable Object accepted with
//! `ctx.acceptWebSocket(ws, tags)`, held by the runtime rather than by the
//! object's instance, so the object may hibernate while they stay open.
//!
//! Design (as workerd's hibernation manager). [`ObjectSockets`] belongs to one
//! object and outlives its activations: the directory keeps it while it holds
//! sockets and hands it to every activation. Each socket's end is read by a
//! task of its own (on the thread that accepted it), never by JS: a message
//! becomes an event of the object (method `WEBSOCKET`, delivered through the
//! directory, which reconstructs a hibernated object first), so the object's
//! mailbox, input gate and output gate apply to it as to any event, and one
//! socket's messages reach the object in order (the next is read when the
//! previous event is done). What must survive hibernation lives here: the
//! sockets' tags, their attachments (structured-clone bytes, at most
//! [`MAX_ATTACHMENT`]), the auto-response pair and each socket's last
//! auto-response time. An auto-response is answered by the reader task and
//! never wakes the object.
//!
//! JS names a socket by a small id (`hid`), unique within the object; the ops
//! find the object from the calling event's context, so an isolate's code
//! reaches only the sockets of the object it runs for.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use deno_core::{op2, v8, JsBuffer, ToJsBuffer};
use parking_lot::Mutex;

use super::body::Body;
use super::durable::ObjectFuture;
use super::script::InvokeRequest;
use super::websocket::{SendError, WsEnd, WsMessage, WsReceiver, WsSender};

/// Hibernatable sockets open on the node.
pub const OPEN: &str = "edged_do_websockets_open";
/// Messages answered by an auto-response (the object not woken).
pub const AUTO_RESPONSES: &str = "edged_do_websocket_auto_responses_total";

/// Tags per socket and bytes per tag (workerd's limits; workerd's message says
/// characters, its check counts bytes).
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_LENGTH: usize = 256;
/// Bytes of a serialized attachment (Workers' limit).
pub const MAX_ATTACHMENT: usize = 2048;
/// Bytes of an auto-response request or response (Workers' limit).
pub const MAX_AUTO_RESPONSE: usize = 2048;
/// The longest event timeout `setHibernatableWebSocketEventTimeout` takes.
pub const MAX_EVENT_TIMEOUT_MS: u64 = 604_800_000;

/// Delivers one event to the object (activating it when hibernated).
pub type Deliver = Arc<dyn Fn(InvokeRequest) -> ObjectFuture + Send + Sync>;

struct Hibernatable {
    tx: WsSender,
    tags: Vec<String>,
    attachment: Option<Vec<u8>>,
    /// When the last auto-response was sent (ms since the epoch).
    auto_at: Option<u64>,
    /// The object sent its close.
    closed_out: bool,
    /// The client's close arrived: the socket is kept (for its attachment)
    /// only until the object's close event is delivered, and is not listed.
    closed_in: bool,
    _counted: Counted,
}

struct Counted;

impl Counted {
    fn new() -> Self {
        metrics::gauge!(OPEN).increment(1.0);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(OPEN).decrement(1.0);
    }
}

#[derive(Default)]
struct Inner {
    next: u32,
    sockets: BTreeMap<u32, Hibernatable>,
    auto_response: Option<(String, String)>,
    event_timeout_ms: Option<u64>,
}

/// One object's hibernatable sockets and what survives its hibernation.
pub struct ObjectSockets {
    inner: Mutex<Inner>,
    deliver: Deliver,
    cap: usize,
}

/// Why an operation on a hibernatable socket failed (a JS `Error`, as
/// workerd's, or a `RangeError`).
#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum HibernationError {
    #[class(generic)]
    #[error("{0}")]
    Failed(String),
    #[class(range)]
    #[error("{0}")]
    Range(String),
    #[class(type)]
    #[error("{0}")]
    Type(String),
}

/// What a socket looks like to JS when its object is reconstructed: its id
/// and whether the object has sent its close.
pub type SocketView = (u32, bool);

impl ObjectSockets {
    /// `cap`: sockets the object may hold at once.
    pub fn new(deliver: Deliver, cap: usize) -> Arc<Self> {
        Arc::new(ObjectSockets {
            inner: Mutex::new(Inner {
                next: 1,
                ..Inner::default()
            }),
            deliver,
            cap,
        })
    }

    /// Whether the object holds no socket (the directory may forget it).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().sockets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().sockets.len()
    }

    /// `ctx.acceptWebSocket(ws, tags)`: the runtime holds `end` from now on
    /// and starts reading it on this thread. Tags are validated and
    /// deduplicated as in workerd.
    pub fn accept(
        self: &Arc<Self>,
        end: WsEnd,
        tags: Vec<String>,
    ) -> Result<u32, HibernationError> {
        let distinct = self.check(tags)?;
        let WsEnd { tx, rx } = end;
        self.insert(tx, rx, distinct)
    }

    /// Validates and deduplicates tags as workerd does, and checks the cap,
    /// before anything is taken from the isolate.
    pub fn check(&self, tags: Vec<String>) -> Result<Vec<String>, HibernationError> {
        let mut distinct: Vec<String> = Vec::new();
        for tag in tags {
            if distinct.len() >= MAX_TAGS && !distinct.contains(&tag) {
                return Err(HibernationError::Failed(format!(
                    "a Hibernatable WebSocket cannot have more than {MAX_TAGS} tags"
                )));
            }
            if tag.len() > MAX_TAG_LENGTH {
                return Err(HibernationError::Failed(format!(
                    "\"{tag}\" is longer than the max tag length ({MAX_TAG_LENGTH} characters)."
                )));
            }
            if !distinct.contains(&tag) {
                distinct.push(tag);
            }
        }
        if self.len() >= self.cap {
            return Err(HibernationError::Failed(format!(
                "too many WebSockets accepted by this Durable Object (the limit is {})",
                self.cap
            )));
        }
        Ok(distinct)
    }

    fn insert(
        self: &Arc<Self>,
        tx: WsSender,
        rx: WsReceiver,
        distinct: Vec<String>,
    ) -> Result<u32, HibernationError> {
        let id = {
            let mut inner = self.inner.lock();
            if inner.sockets.len() >= self.cap {
                return Err(HibernationError::Failed(format!(
                    "too many WebSockets accepted by this Durable Object (the limit is {})",
                    self.cap
                )));
            }
            let id = inner.next;
            inner.next = inner.next.wrapping_add(1).max(1);
            inner.sockets.insert(
                id,
                Hibernatable {
                    tx,
                    tags: distinct,
                    attachment: None,
                    auto_at: None,
                    closed_out: false,
                    closed_in: false,
                    _counted: Counted::new(),
                },
            );
            id
        };
        let me = Arc::downgrade(self);
        tokio::spawn(read_loop(me, id, rx));
        Ok(id)
    }

    /// The sockets with `tag` (all without one), oldest first.
    pub fn list(&self, tag: Option<&str>) -> Vec<SocketView> {
        self.inner
            .lock()
            .sockets
            .iter()
            .filter(|(_, s)| !s.closed_in)
            .filter(|(_, s)| tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
            .map(|(id, s)| (*id, s.closed_out))
            .collect()
    }

    pub fn tags(&self, id: u32) -> Option<Vec<String>> {
        self.inner.lock().sockets.get(&id).map(|s| s.tags.clone())
    }

    /// Sends to the client; a socket gone or closed ignores it (as the spec
    /// says for a closed socket).
    pub fn send(&self, id: u32, msg: WsMessage) -> Result<(), HibernationError> {
        let mut inner = self.inner.lock();
        let Some(s) = inner.sockets.get_mut(&id) else {
            return Ok(());
        };
        if s.closed_out {
            return Err(HibernationError::Type(
                "Can't call WebSocket send() after close().".into(),
            ));
        }
        if matches!(msg, WsMessage::Close(..)) {
            s.closed_out = true;
        }
        match s.tx.try_send(msg) {
            Ok(()) | Err(SendError::Closed) => Ok(()),
            Err(SendError::Full) => Err(HibernationError::Type(format!(
                "WebSocket send() buffered more than {} bytes that the other end has not read yet.",
                super::websocket::QUEUE_BYTES
            ))),
        }
    }

    pub fn set_attachment(&self, id: u32, bytes: Option<Vec<u8>>) -> Result<(), HibernationError> {
        if let Some(b) = &bytes {
            if b.len() > MAX_ATTACHMENT {
                return Err(HibernationError::Failed(format!(
                    "A WebSocket 'attachment' cannot be larger than {MAX_ATTACHMENT} bytes.'attachment' was {} bytes.",
                    b.len()
                )));
            }
        }
        if let Some(s) = self.inner.lock().sockets.get_mut(&id) {
            s.attachment = bytes;
        }
        Ok(())
    }

    pub fn attachment(&self, id: u32) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .sockets
            .get(&id)
            .and_then(|s| s.attachment.clone())
    }

    /// `setWebSocketAutoResponse(pair)`; `None` unsets it.
    pub fn set_auto_response(
        &self,
        pair: Option<(String, String)>,
    ) -> Result<(), HibernationError> {
        if let Some((req, res)) = &pair {
            if req.len() > MAX_AUTO_RESPONSE {
                return Err(HibernationError::Range(format!(
                    "Request cannot be larger than {MAX_AUTO_RESPONSE} bytes. A request of size {} was provided.",
                    req.len()
                )));
            }
            if res.len() > MAX_AUTO_RESPONSE {
                return Err(HibernationError::Range(format!(
                    "Response cannot be larger than {MAX_AUTO_RESPONSE} bytes. A response of size {} was provided.",
                    res.len()
                )));
            }
        }
        self.inner.lock().auto_response = pair;
        Ok(())
    }

    pub fn auto_response(&self) -> Option<(String, String)> {
        self.inner.lock().auto_response.clone()
    }

    pub fn auto_response_at(&self, id: u32) -> Option<u64> {
        self.inner.lock().sockets.get(&id).and_then(|s| s.auto_at)
    }

    /// `setHibernatableWebSocketEventTimeout(ms)`; 0 or none unsets it.
    pub fn set_event_timeout(&self, ms: Option<u64>) -> Result<(), HibernationError> {
        if ms.is_some_and(|t| t > MAX_EVENT_TIMEOUT_MS) {
            return Err(HibernationError::Failed(format!(
                "Event timeout should not exceed {MAX_EVENT_TIMEOUT_MS} ms."
            )));
        }
        self.inner.lock().event_timeout_ms = ms.filter(|t| *t > 0);
        Ok(())
    }

    pub fn event_timeout(&self) -> Option<u64> {
        self.inner.lock().event_timeout_ms
    }

    /// Closes every socket (the object's worker was deleted or its storage
    /// reset): clients get `code`; nothing more reaches the object.
    pub fn close_all(&self, code: u16, reason: &str) {
        let sockets = std::mem::take(&mut self.inner.lock().sockets);
        for (_, s) in sockets {
            if !s.closed_out {
                let _ = s.tx.try_send(WsMessage::Close(code, reason.to_owned()));
            }
        }
    }

    /// A message the runtime answers itself, if the auto-response matches.
    fn auto_answer(&self, id: u32, text: &str) -> bool {
        let mut inner = self.inner.lock();
        let Some((req, res)) = inner.auto_response.clone() else {
            return false;
        };
        if req != text {
            return false;
        }
        let Some(s) = inner.sockets.get_mut(&id) else {
            return true;
        };
        if !s.closed_out {
            let _ = s.tx.try_send(WsMessage::Text(res));
        }
        s.auto_at = Some(now_ms());
        metrics::counter!(AUTO_RESPONSES).increment(1);
        true
    }

    /// The client closed (or went away): the socket is forgotten, and the
    /// close handshake answered if the object has not closed yet (Workers'
    /// automatic reply to a close).
    fn closed_in(&self, id: u32, code: u16, reason: &str) {
        let mut inner = self.inner.lock();
        let Some(s) = inner.sockets.get_mut(&id) else {
            return;
        };
        s.closed_in = true;
        if !s.closed_out && code != 1006 {
            s.closed_out = true;
            let _ = s.tx.try_send(WsMessage::Close(code, reason.to_owned()));
        }
    }

    /// The object has seen the socket's close: it is gone.
    fn forget(&self, id: u32) {
        self.inner.lock().sockets.remove(&id);
    }
}

/// The event for a socket message: `ws:<kind>:<hid>`; for a close the code
/// and cleanliness ride in the URL (`ws:close:<hid>:<code>:<clean>`) and the
/// reason in the body.
fn event(url: String, body: Option<Bytes>) -> InvokeRequest {
    InvokeRequest {
        method: "WEBSOCKET".into(),
        url,
        headers: Vec::new(),
        body: body.map(Body::Bytes),
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
        cf: None,
    }
}

/// Reads one hibernatable socket and turns what arrives into events.
async fn read_loop(set: std::sync::Weak<ObjectSockets>, id: u32, mut rx: WsReceiver) {
    loop {
        let msg = rx.recv().await;
        let Some(sockets) = set.upgrade() else {
            return;
        };
        if !sockets.inner.lock().sockets.contains_key(&id) {
            // Closed by the runtime (close_all): nothing more is delivered.
            return;
        }
        let (request, last) = match msg {
            Some(WsMessage::Text(text)) => {
                if sockets.auto_answer(id, &text) {
                    continue;
                }
                (
                    event(format!("ws:text:{id}"), Some(Bytes::from(text))),
                    false,
                )
            }
            Some(WsMessage::Binary(bytes)) => {
                (event(format!("ws:binary:{id}"), Some(bytes)), false)
            }
            Some(WsMessage::Close(code, reason)) => {
                sockets.closed_in(id, code, &reason);
                (
                    event(format!("ws:close:{id}:{code}:1"), Some(Bytes::from(reason))),
                    true,
                )
            }
            None => {
                sockets.closed_in(id, 1006, "");
                let reason = "WebSocket disconnected without sending Close frame.";
                (
                    event(format!("ws:close:{id}:1006:0"), Some(Bytes::from(reason))),
                    true,
                )
            }
        };
        let timeout = sockets.event_timeout();
        let delivered = (sockets.deliver)(request);
        drop(sockets);
        let outcome = match timeout {
            Some(ms) => tokio::time::timeout(std::time::Duration::from_millis(ms), delivered)
                .await
                .unwrap_or_else(|_| {
                    Err(super::InvokeError::Unavailable(
                        "the WebSocket event timed out".into(),
                    ))
                }),
            None => delivered.await,
        };
        if let Err(e) = outcome {
            tracing::debug!(socket = id, error = %e, "hibernatable WebSocket event failed");
        }
        if last {
            if let Some(sockets) = set.upgrade() {
                sockets.forget(id);
            }
            return;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The hibernatable sockets of the objects active in an object host's
/// isolate, by slot (filled as objects activate).
#[derive(Default)]
pub struct ObjectSocketSets(pub std::collections::HashMap<u32, Arc<ObjectSockets>>);

/// The sockets of the object the calling event belongs to (the slot comes from
/// the request's context, never from JS).
fn current(scope: &mut v8::HandleScope) -> Result<Arc<ObjectSockets>, HibernationError> {
    let slot = super::context::current_slot(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let state = state.borrow();
    slot.and_then(|slot| {
        state
            .try_borrow::<ObjectSocketSets>()
            .and_then(|s| s.0.get(&slot).cloned())
    })
    .ok_or_else(|| {
        HibernationError::Failed(
            "hibernatable WebSockets are only available inside a Durable Object that is still active"
                .into(),
        )
    })
}

/// `ctx.acceptWebSocket(ws, tags)`: the end `rid` leaves the isolate's table
/// for the object's set.
#[op2]
pub fn op_do_ws_accept(
    scope: &mut v8::HandleScope,
    #[smi] rid: u32,
    #[serde] tags: Vec<String>,
) -> Result<u32, HibernationError> {
    let sockets = current(scope)?;
    let state = deno_core::JsRuntime::op_state_from(scope);
    let refused = || {
        HibernationError::Failed(
            "Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response.".into(),
        )
    };
    if !super::websocket::peer_waiting(&mut state.borrow_mut(), rid) {
        return Err(refused());
    }
    // Refusals leave the socket where it was.
    sockets.check(tags.clone())?;
    let end = super::websocket::take_socket(&mut state.borrow_mut(), rid).ok_or_else(|| {
        HibernationError::Failed(
            "Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response.".into(),
        )
    })?;
    sockets.accept(end, tags)
}

#[op2]
#[serde]
pub fn op_do_ws_list(
    scope: &mut v8::HandleScope,
    #[string] tag: Option<String>,
) -> Result<Vec<SocketView>, HibernationError> {
    Ok(current(scope)?.list(tag.as_deref()))
}

#[op2]
#[serde]
pub fn op_do_ws_tags(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
) -> Result<Vec<String>, HibernationError> {
    Ok(current(scope)?.tags(hid).unwrap_or_default())
}

#[op2(nofast)]
pub fn op_do_ws_send_text(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
    #[string] text: String,
) -> Result<(), HibernationError> {
    if text.len() > super::websocket::MAX_MESSAGE {
        return Err(too_large(text.len()));
    }
    current(scope)?.send(hid, WsMessage::Text(text))
}

#[op2]
pub fn op_do_ws_send_binary(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
    #[buffer] data: JsBuffer,
) -> Result<(), HibernationError> {
    if data.len() > super::websocket::MAX_MESSAGE {
        return Err(too_large(data.len()));
    }
    current(scope)?.send(hid, WsMessage::Binary(Bytes::copy_from_slice(&data)))
}

fn too_large(n: usize) -> HibernationError {
    HibernationError::Type(format!(
        "WebSocket message is too large: {n} bytes (the limit is {}).",
        super::websocket::MAX_MESSAGE
    ))
}

#[op2(nofast)]
pub fn op_do_ws_close(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
    #[smi] code: u32,
    #[string] reason: String,
) -> Result<(), HibernationError> {
    current(scope)?.send(hid, WsMessage::Close(code as u16, reason))
}

#[op2]
pub fn op_do_ws_set_attachment(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
    #[buffer] bytes: Option<JsBuffer>,
) -> Result<(), HibernationError> {
    current(scope)?.set_attachment(hid, bytes.map(|b| b.to_vec()))
}

#[op2]
#[serde]
pub fn op_do_ws_attachment(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
) -> Result<Option<ToJsBuffer>, HibernationError> {
    Ok(current(scope)?.attachment(hid).map(ToJsBuffer::from))
}

#[op2]
pub fn op_do_ws_set_auto_response(
    scope: &mut v8::HandleScope,
    #[serde] pair: Option<(String, String)>,
) -> Result<(), HibernationError> {
    current(scope)?.set_auto_response(pair)
}

#[op2]
#[serde]
pub fn op_do_ws_auto_response(
    scope: &mut v8::HandleScope,
) -> Result<Option<(String, String)>, HibernationError> {
    Ok(current(scope)?.auto_response())
}

/// Milliseconds since the epoch, or null.
#[op2]
#[serde]
pub fn op_do_ws_auto_response_at(
    scope: &mut v8::HandleScope,
    #[smi] hid: u32,
) -> Result<Option<u64>, HibernationError> {
    Ok(current(scope)?.auto_response_at(hid))
}

#[op2]
pub fn op_do_ws_set_event_timeout(
    scope: &mut v8::HandleScope,
    #[serde] ms: Option<u64>,
) -> Result<(), HibernationError> {
    current(scope)?.set_event_timeout(ms)
}

#[op2]
#[serde]
pub fn op_do_ws_event_timeout(
    scope: &mut v8::HandleScope,
) -> Result<Option<u64>, HibernationError> {
    Ok(current(scope)?.event_timeout())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets() -> Arc<ObjectSockets> {
        ObjectSockets::new(
            Arc::new(|_| {
                Box::pin(async { Err(super::super::InvokeError::Unavailable("x".into())) })
            }),
            2,
        )
    }

    #[tokio::test]
    async fn tags_attachments_and_caps_are_kept_in_rust() {
        let set = sockets();
        let (a, _client_a) = super::super::websocket::pair();
        let many: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert!(set.accept(a, many).is_err());
        let (a, _client_a) = super::super::websocket::pair();
        let id = set
            .accept(a, vec!["room".into(), "room".into(), "x".into()])
            .unwrap();
        assert_eq!(set.tags(id), Some(vec!["room".into(), "x".into()]));
        assert!(set
            .set_attachment(id, Some(vec![0; MAX_ATTACHMENT + 1]))
            .is_err());
        set.set_attachment(id, Some(vec![7; 10])).unwrap();
        assert_eq!(set.attachment(id), Some(vec![7; 10]));
        let (b, _client_b) = super::super::websocket::pair();
        set.accept(b, vec![]).unwrap();
        let (c, _client_c) = super::super::websocket::pair();
        assert!(set.accept(c, vec![]).is_err(), "over the per-object cap");
        assert_eq!(set.list(Some("room")).len(), 1);
        assert_eq!(set.list(None).len(), 2);
    }

    #[tokio::test]
    async fn an_auto_response_is_answered_without_the_object() {
        let set = sockets();
        set.set_auto_response(Some(("ping".into(), "pong".into())))
            .unwrap();
        let (a, mut client) = super::super::websocket::pair();
        let id = set.accept(a, vec![]).unwrap();
        client.tx.try_send(WsMessage::Text("ping".into())).unwrap();
        assert_eq!(client.rx.recv().await, Some(WsMessage::Text("pong".into())));
        assert!(set.auto_response_at(id).is_some());
    }
}
