//! Outbound WebSockets: `fetch(url, {headers: {Upgrade: "websocket"}})` and
//! `new WebSocket(url)` from a worker.
//!
//! The handshake and framing are tokio-tungstenite's. A connection passes the
//! same gates as `fetch()`: it counts as a subrequest of the calling request
//! and its URL must pass the node's egress policy (checked on the `http(s)`
//! form of the URL, as fetch checks it; the same DNS-rebinding gap applies,
//! see `egress.rs`). Once the server answers 101, the connection is joined to
//! one end of a socket pair by a task on this thread, and the other end goes
//! into the isolate's table for the calling request, exactly like an end that
//! came back from a service binding: the worker `accept()`s it. Any other
//! answer comes back as a plain response.
//!
//! Limits as for client sockets: a message is at most 1 MiB either way (a
//! bigger one from the server closes with 1009), and the worker's sends queue
//! with the same byte budget.

use deno_core::{op2, v8, ToJsBuffer};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{http, Error as TError, Message};

use super::websocket::{pair, WsEnd, WsMessage, MAX_MESSAGE};

/// Outbound WebSockets opened, by outcome.
pub const CONNECTS: &str = "edged_websocket_outbound_total";

/// Handshake headers the runtime sets itself.
const OWN_HEADERS: [&str; 6] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// How long one write to the server may wait, and how long a close waits
/// for the other side's.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ConnectError {
    #[class(type)]
    #[error("{0}")]
    Refused(String),
    #[class(generic)]
    #[error("{0}")]
    Limit(String),
}

/// The server's answer: status, flat headers, a body (not a 101), and the
/// socket end's id in the isolate's table (a 101).
type Connected = (u16, Vec<String>, Option<ToJsBuffer>, Option<u32>);

/// `http(s)` and `ws(s)` URLs as the egress check and the client want them.
fn urls(url: &str) -> Result<(deno_core::url::Url, String), ConnectError> {
    let bad = || ConnectError::Refused(format!("Fetch API cannot load: {url}"));
    let parsed = deno_core::url::Url::parse(url).map_err(|_| bad())?;
    let (http, ws) = match parsed.scheme() {
        "http" | "ws" => ("http", "ws"),
        "https" | "wss" => ("https", "wss"),
        _ => return Err(bad()),
    };
    let rest = &parsed.as_str()[parsed.scheme().len()..];
    let check = deno_core::url::Url::parse(&format!("{http}{rest}")).map_err(|_| bad())?;
    Ok((check, format!("{ws}{rest}")))
}

#[op2(async)]
#[serde]
pub fn op_ws_connect(
    scope: &mut v8::HandleScope,
    #[string] url: String,
    #[serde] headers: Vec<String>,
) -> impl std::future::Future<Output = Result<Connected, ConnectError>> {
    let counted = super::context::outgoing(scope, "fetch()");
    let owner = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let policy = state
        .borrow()
        .try_borrow::<super::extension::EdgedPermissions>()
        .and_then(|p| p.egress.clone());
    async move {
        counted.map_err(|e| ConnectError::Limit(e.to_string()))?;
        let (check, target) = urls(&url)?;
        let policy = policy.ok_or_else(|| {
            ConnectError::Refused("network access (this isolate serves no worker)".into())
        })?;
        tokio::task::spawn_blocking(move || policy.check(&check))
            .await
            .map_err(|e| ConnectError::Refused(e.to_string()))?
            .map_err(ConnectError::Refused)?;
        let mut request = target
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Refused(format!("Fetch API cannot load: {url} ({e})")))?;
        for pair in headers.chunks_exact(2) {
            let name = pair[0].to_ascii_lowercase();
            if OWN_HEADERS.contains(&name.as_str()) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&pair[1]),
            ) {
                request.headers_mut().append(n, v);
            }
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                metrics::counter!(CONNECTS, "outcome" => "timeout").increment(1);
                ConnectError::Refused(format!("WebSocket handshake with {url} timed out"))
            })?;
        let (stream, response) = match outcome {
            Ok(ok) => ok,
            Err(TError::Http(response)) => {
                // Not an upgrade: the server's answer as a plain response.
                metrics::counter!(CONNECTS, "outcome" => "refused").increment(1);
                let (parts, body) = response.into_parts();
                return Ok((
                    parts.status.as_u16(),
                    flat(&parts.headers),
                    body.map(ToJsBuffer::from),
                    None,
                ));
            }
            Err(e) => {
                metrics::counter!(CONNECTS, "outcome" => "failed").increment(1);
                return Err(ConnectError::Refused(format!(
                    "WebSocket connection to {url} failed: {e}"
                )));
            }
        };
        metrics::counter!(CONNECTS, "outcome" => "ok").increment(1);
        let (mine, theirs) = pair();
        let id = super::websocket::add_socket(&mut state.borrow_mut(), theirs, owner)
            .map_err(|e| ConnectError::Limit(e.to_string()))?;
        tokio::spawn(relay(stream, mine));
        Ok((
            response.status().as_u16(),
            flat(response.headers()),
            None,
            Some(id),
        ))
    }
}

fn flat(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .iter()
        .flat_map(|(k, v)| {
            [
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect()
}

async fn timely<E>(io: impl std::future::Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(IO_TIMEOUT, io).await, Ok(Ok(())))
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Moves messages between the server and the worker's end until both
/// closes have passed or either side is gone.
async fn relay(mut stream: Stream, end: WsEnd) {
    let WsEnd { tx, mut rx } = end;
    let mut closed_in = false;
    let mut closed_out = false;
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        if closed_in && closed_out {
            break;
        }
        if (closed_in || closed_out) && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + IO_TIMEOUT);
        }
        let deadline = grace.unwrap_or_else(|| tokio::time::Instant::now() + IO_TIMEOUT);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline), if grace.is_some() => break,
            got = stream.next(), if !closed_in => match got {
                Some(Ok(Message::Text(t))) => {
                    if tx.send(WsMessage::Text(t.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if tx.send(WsMessage::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(frame))) => {
                    closed_in = true;
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    let _ = tx.send(WsMessage::Close(code, reason)).await;
                }
                Some(Err(TError::Capacity(_))) => {
                    let _ = tx.try_send(WsMessage::Close(1009, "Message is too large".into()));
                    let _ = timely(stream.close(Some(CloseFrame {
                            code: CloseCode::Size,
                            reason: "Message is too large".into(),
                        }))).await;
                    break;
                }
                // Gone without a close: the worker's end reads its peer gone.
                Some(Err(_)) | None => break,
            },
            out = rx.recv(), if !closed_out => match out {
                Some(WsMessage::Text(t)) => {
                    if !timely(stream.send(Message::text(t))).await {
                        break;
                    }
                }
                Some(WsMessage::Binary(b)) => {
                    if !timely(stream.send(Message::Binary(b))).await {
                        break;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    closed_out = true;
                    let frame = (code != 1005).then(|| CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    });
                    let _ = timely(stream.close(frame)).await;
                }
                None => {
                    let _ = timely(stream.close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: "the worker's end of the WebSocket went away".into(),
                        }))).await;
                    break;
                }
            },
        }
    }
}
