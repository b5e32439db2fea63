//! The client's side of a WebSocket: the data plane completes an upgrade the
//! worker accepted (a 101 carrying a socket end) and joins the connection to
//! that end.
//!
//! The WebSocket protocol itself (handshake, framing, masking, fragments) is
//! actix-http's, through `actix-ws`; this file only moves whole messages
//! between the client and the worker's end (`js::websocket`) and keeps the
//! rules Workers keeps for the client:
//! - a message (after joining fragments) is at most 1 MiB; a bigger one closes
//!   the socket with 1009, and the worker sees the same close;
//! - pings are answered here; the worker never sees them;
//! - a client that goes away without a close frame is a 1006 close for the
//!   worker; a worker end that goes away without one is a 1011 close for the
//!   client (the isolate died or was replaced);
//! - after one side's close, the other's is awaited for at most
//!   [`CLOSE_GRACE`], then the connection ends anyway;
//! - once the worker's close is written, actix ends the response and stops
//!   reading, so the client's answering close may never be decoded: a
//!   connection that ends after the worker's close counts as the client's
//!   clean answer with the worker's code and reason (what a conforming client
//!   echoes), which is what the worker's `close` event reports.
//!
//! Nothing here waits on the worker: messages for it are queued with
//! backpressure (a slow worker slows its client's reads), and what the worker
//! sends is written as fast as the client reads it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;

use crate::js::websocket::MAX_MESSAGE;
use crate::js::{WsEnd, WsMessage};

/// Client WebSockets open, by worker.
pub const OPEN: &str = "edged_websockets_open";
/// Messages through the data plane, by worker and direction (`in`: from the
/// client).
pub const MESSAGES: &str = "edged_websocket_messages_total";
pub const BYTES: &str = "edged_websocket_bytes_total";
/// Closes, by worker, code and which side closed first.
pub const CLOSES: &str = "edged_websocket_closes_total";

/// How long one side's close waits for the other's.
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Open client sockets per worker, against `limits.websockets_per_worker`.
#[derive(Default)]
pub struct OpenSockets {
    by_worker: Mutex<HashMap<String, usize>>,
}

/// One open socket, counted until dropped.
pub struct Held {
    sockets: Arc<OpenSockets>,
    worker: String,
}

impl OpenSockets {
    /// Counts one more socket for `worker`, unless it has `cap` already.
    pub fn hold(self: &Arc<Self>, worker: &str, cap: usize) -> Option<Held> {
        let mut map = self.by_worker.lock();
        let n = map.entry(worker.to_owned()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        metrics::gauge!(OPEN, "worker" => worker.to_owned()).increment(1.0);
        Some(Held {
            sockets: self.clone(),
            worker: worker.to_owned(),
        })
    }

    pub fn count(&self, worker: &str) -> usize {
        self.by_worker.lock().get(worker).copied().unwrap_or(0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.sockets.by_worker.lock();
        if let Some(n) = map.get_mut(&self.worker) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.worker);
            }
        }
        metrics::gauge!(OPEN, "worker" => self.worker.clone()).decrement(1.0);
    }
}

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Headers of the worker's 101 that the handshake owns.
fn handshake_header(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"upgrade",
        b"sec-websocket-accept",
        b"content-length",
        b"transfer-encoding",
        b"keep-alive",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Completes the upgrade and joins the connection to the worker's `end`. A
/// request that is not a valid upgrade gets a 400 (the worker's end then
/// closes with 1006).
pub fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    end: WsEnd,
    headers: &[(Vec<u8>, Vec<u8>)],
    worker: &str,
    held: Held,
) -> HttpResponse {
    // A connection that ends (or fails) is the end of the client's frames,
    // after the ones already read: actix-ws would drop those (a close frame
    // sent just before the client hung up, typically) on a read error.
    let frames = payload
        .into_inner()
        .take_while(|chunk| futures::future::ready(chunk.is_ok()));
    let mut inner =
        actix_web::dev::Payload::from(Box::pin(frames) as actix_http::BoxedPayloadStream);
    let Some(Ok(payload)) =
        <web::Payload as actix_web::FromRequest>::from_request(req, &mut inner).now_or_never()
    else {
        return super::error::error_body(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the connection could not be taken over",
        );
    };
    let (mut response, session, stream) = match actix_ws::handle(req, payload) {
        Ok(parts) => parts,
        Err(e) => {
            return super::error::error_body(
                actix_web::http::StatusCode::BAD_REQUEST,
                "bad_websocket_upgrade",
                &format!("the worker answered with a WebSocket, but the request is not a valid WebSocket upgrade: {e}"),
            )
        }
    };
    for (name, value) in headers {
        if handshake_header(name) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            response.headers_mut().append(n, v);
        }
    }
    let stream = stream
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    actix_web::rt::spawn(bridge(session, stream, end, worker.to_owned(), held));
    response
}

fn close_reason(code: u16, reason: &str) -> Option<CloseReason> {
    if code == 1005 {
        return None;
    }
    // A close frame's payload is at most 125 bytes: the reason is cut to 123
    // on a character boundary (JS refuses longer ones; this is the backstop).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    Some(CloseReason {
        code: CloseCode::from(code),
        description: (!reason.is_empty()).then(|| reason.to_owned()),
    })
}

/// A protocol error as the close code sent for it.
fn error_code(e: &ProtocolError) -> (u16, &'static str) {
    match e {
        ProtocolError::Overflow => (1009, "Message is too large"),
        ProtocolError::Io(io) if io.to_string().contains("maximum continuation size") => {
            (1009, "Message is too large")
        }
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            (1007, "Text message is not valid UTF-8")
        }
        _ => (1002, "WebSocket protocol error"),
    }
}

/// How long one write to the client may wait for it to read: a client that
/// stops reading is dropped rather than holding the worker's queue for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

async fn written<E>(write: impl std::future::Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// A close code as a metric label: the codes the protocol defines as they
/// are, application ranges grouped (a client picks the code, and each label
/// is a series).
fn code_label(code: u16) -> String {
    match code {
        1000..=1015 => code.to_string(),
        3000..=3999 => "3xxx".into(),
        4000..=4999 => "4xxx".into(),
        _ => "other".into(),
    }
}

/// Moves messages both ways until both sides have closed, one side is gone,
/// or a close waited [`CLOSE_GRACE`] for its answer.
async fn bridge(
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    end: WsEnd,
    worker: String,
    _held: Held,
) {
    let WsEnd { tx, mut rx } = end;
    let msgs_in = metrics::counter!(MESSAGES, "worker" => worker.clone(), "direction" => "in");
    let msgs_out = metrics::counter!(MESSAGES, "worker" => worker.clone(), "direction" => "out");
    let bytes_in = metrics::counter!(BYTES, "worker" => worker.clone(), "direction" => "in");
    let bytes_out = metrics::counter!(BYTES, "worker" => worker.clone(), "direction" => "out");
    let closes = |code: u16, by: &'static str| {
        metrics::counter!(CLOSES, "worker" => worker.clone(), "code" => code_label(code), "by" => by)
            .increment(1);
    };
    // Which closes have passed: from the client, to the client.
    let mut closed_in = false;
    let mut closed_out = false;
    let mut worker_gone = false;
    // The close the worker sent, for the answer the client is presumed to echo.
    let mut sent_close: Option<(u16, String)> = None;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        if closed_in && closed_out {
            break;
        }
        if (closed_in || closed_out) && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + CLOSE_GRACE);
        }
        let deadline = grace.unwrap_or_else(|| tokio::time::Instant::now() + CLOSE_GRACE);
        tokio::select! {
            msg = stream.recv(), if !closed_in => match msg {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    msgs_in.increment(1);
                    bytes_in.increment(text.len() as u64);
                    let _ = tx.send(WsMessage::Text(text.to_string())).await;
                }
                Some(Ok(AggregatedMessage::Binary(bytes))) => {
                    msgs_in.increment(1);
                    bytes_in.increment(bytes.len() as u64);
                    let _ = tx.send(WsMessage::Binary(bytes)).await;
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if session.pong(&p).await.is_err() {
                        break;
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    closed_in = true;
                    let (code, text) = match reason {
                        Some(r) => (u16::from(r.code), r.description.unwrap_or_default()),
                        None => (1005, String::new()),
                    };
                    if !closed_out {
                        closes(code, "client");
                    }
                    if tx.send(WsMessage::Close(code, text.clone())).await.is_err() && !closed_out {
                        // Nobody at the worker's end to answer: answer here.
                        closed_out = true;
                        let _ = session.clone().close(close_reason(code, &text)).await;
                    }
                }
                Some(Err(_)) if sent_close.is_some() => {
                    // The connection broke off after the worker's close.
                    if let Some((code, reason)) = sent_close.take() {
                        let _ = tx.try_send(WsMessage::Close(code, reason));
                    }
                    break;
                }
                Some(Err(e)) => {
                    let (code, text) = error_code(&e);
                    tracing::debug!(worker, error = %e, "WebSocket closed for a protocol error");
                    closes(code, "runtime");
                    let _ = tx.try_send(WsMessage::Close(code, text.to_owned()));
                    let _ = session.clone().close(close_reason(code, text)).await;
                    break;
                }
                None => {
                    if let Some((code, reason)) = sent_close.take() {
                        // The connection ended after the worker's close: the
                        // close handshake is complete from the client's side.
                        let _ = tx.try_send(WsMessage::Close(code, reason));
                    } else if !closed_out {
                        // The client went away without a close: the worker's
                        // end sees its peer gone (1006).
                        closes(1006, "client");
                    }
                    break;
                }
            },
            out = rx.recv(), if !worker_gone => match out {
                Some(WsMessage::Text(text)) => {
                    msgs_out.increment(1);
                    bytes_out.increment(text.len() as u64);
                    if !written(session.text(text)).await {
                        break;
                    }
                }
                Some(WsMessage::Binary(bytes)) => {
                    msgs_out.increment(1);
                    bytes_out.increment(bytes.len() as u64);
                    if !written(session.binary(bytes)).await {
                        break;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    if !closed_out {
                        if !closed_in {
                            closes(code, "worker");
                        }
                        closed_out = true;
                        let _ = session.clone().close(close_reason(code, &reason)).await;
                        if !closed_in {
                            sent_close = Some((code, reason));
                        }
                    }
                }
                None => {
                    worker_gone = true;
                    if !closed_out {
                        closes(1011, "runtime");
                        closed_out = true;
                        let _ = session
                            .clone()
                            .close(close_reason(1011, "the worker's end of the WebSocket went away"))
                            .await;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline), if grace.is_some() => break,
        }
    }
}
