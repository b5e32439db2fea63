//! Remote actor messages: the wire between nodes.
//!
//! A call to an object owned by another node is one HTTP/1.1 request on a
//! pooled keep-alive connection to the owner's peer listener
//! (`POST /peer/v1/object`), authenticated by the cluster secret. Its body is
//! a framed head (`u32` big-endian length, then JSON: [`CallHead`]) followed by
//! the event's body bytes; the answer's body is a framed [`ReplyHead`]
//! followed by the response body, streamed both ways, so a body of any size
//! crosses with bounded memory. The server side is `http/peer.rs`.
//!
//! A frame is at most [`MAX_HEAD`] bytes and is parsed with serde: a
//! malformed message is refused, never trusted.

use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::js::durable::ObjectAddress;
use crate::js::{
    body_channel, next_joined, Body, BodySink, InvokeError, InvokeRequest, InvokeResponse,
    StreamSlot,
};

/// The path of the peer endpoint.
pub const PATH: &str = "/peer/v1/object";
/// The header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-edged-cluster-secret";
/// The largest head a node accepts (headers of one event).
pub const MAX_HEAD: usize = 1 << 20;
/// A response body up to this size that has fully arrived is handed on as bytes.
const INLINE_UP_TO: usize = 64 << 10;

/// Which object, as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WireAddress {
    pub worker: String,
    pub storage: String,
    pub class_name: String,
    pub id: String,
    pub name: Option<String>,
}

impl From<&ObjectAddress> for WireAddress {
    fn from(a: &ObjectAddress) -> Self {
        WireAddress {
            worker: a.worker.clone(),
            storage: a.storage.clone(),
            class_name: a.class_name.clone(),
            id: a.id.clone(),
            name: a.name.clone(),
        }
    }
}

impl From<WireAddress> for ObjectAddress {
    fn from(a: WireAddress) -> Self {
        ObjectAddress {
            worker: a.worker,
            storage: a.storage,
            class_name: a.class_name,
            id: a.id,
            name: a.name,
        }
    }
}

/// One Durable Object event sent to its owner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallHead {
    pub object: WireAddress,
    /// The owner epoch the caller believes in.
    pub epoch: u64,
    pub from: String,
    pub request_id: u64,
    pub depth: u8,
    pub method: String,
    pub url: String,
    /// Header values in base64 (they are bytes).
    pub headers: Vec<(String, String)>,
    pub body: bool,
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyHead {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: bool,
        /// An RPC answer's targets passed by reference: the object's session
        /// and their count (`js::rpc`); calls on them come back as events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rpc: Option<(u64, u32)>,
    },
    /// The receiver does not own the object; `node` does, at `epoch`.
    Moved {
        node: String,
        epoch: u64,
    },
    Failed {
        kind: String,
        message: String,
    },
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

fn unb64(v: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|e| format!("bad header value: {e}"))
}

pub fn encode_headers<K: AsRef<[u8]>>(headers: &[(K, Vec<u8>)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k.as_ref()).into_owned(), b64(v)))
        .collect()
}

pub fn decode_headers(headers: Vec<(String, String)>) -> Result<Vec<(String, Vec<u8>)>, String> {
    headers
        .into_iter()
        .map(|(k, v)| Ok((k, unb64(&v)?)))
        .collect()
}

/// An [`InvokeError`] as it crosses the wire, and back.
pub fn error_to_wire(e: &InvokeError) -> (String, String) {
    let (kind, message) = match e {
        InvokeError::Exception(m) => ("exception", m.clone()),
        InvokeError::BadResponse(m) => ("bad_response", m.clone()),
        InvokeError::CpuLimit => ("cpu_limit", String::new()),
        InvokeError::MemoryLimit => ("memory_limit", String::new()),
        InvokeError::Stopping => ("stopping", String::new()),
        InvokeError::Unavailable(m) => ("unavailable", m.clone()),
        InvokeError::NeverResponds => ("never_responds", String::new()),
        InvokeError::Timeout(s) => ("timeout", s.to_string()),
        InvokeError::Cluster(m) => ("cluster", m.clone()),
    };
    (kind.to_owned(), message)
}

pub fn error_from_wire(kind: &str, message: String) -> InvokeError {
    match kind {
        "exception" => InvokeError::Exception(message),
        "bad_response" => InvokeError::BadResponse(message),
        "cpu_limit" => InvokeError::CpuLimit,
        "memory_limit" => InvokeError::MemoryLimit,
        "stopping" => InvokeError::Stopping,
        "never_responds" => InvokeError::NeverResponds,
        "timeout" => InvokeError::Timeout(message.parse().unwrap_or(0)),
        "cluster" => InvokeError::Cluster(message),
        _ => InvokeError::Unavailable(message),
    }
}

/// A framed head: length, then JSON.
pub fn frame<T: Serialize>(head: &T) -> Bytes {
    let json = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.freeze()
}

/// Reads a framed head off `stream`; returns it with the bytes after it.
pub async fn read_head<T, S, E>(stream: &mut S) -> Result<(T, Bytes), String>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    let mut need: Option<usize> = None;
    loop {
        if need.is_none() && buf.len() >= 4 {
            let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if n > MAX_HEAD {
                return Err(format!("message head of {n} bytes is over {MAX_HEAD}"));
            }
            need = Some(n);
        }
        if let Some(n) = need {
            if buf.len() >= 4 + n {
                let rest = buf.split_off(4 + n).freeze();
                let head = serde_json::from_slice(&buf[4..])
                    .map_err(|e| format!("malformed message head: {e}"))?;
                return Ok((head, rest));
            }
        }
        match stream.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(format!("cannot read the message: {e}")),
            None => return Err("the message ended inside its head".into()),
        }
    }
}

/// How a body that follows a head begins.
pub enum BodyStart {
    /// It was short and has all arrived (or it failed): the whole body.
    Whole(Body),
    /// It goes on: what has arrived so far, to stream on with [`feed`].
    Streaming(Bytes),
}

/// Reads what follows `first` on `rest` up to [`INLINE_UP_TO`] bytes.
pub async fn start_body<S, E>(first: Bytes, rest: &mut S) -> BodyStart
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut head = BytesMut::from(&first[..]);
    while head.len() <= INLINE_UP_TO {
        match rest.next().await {
            None => return BodyStart::Whole(Body::Bytes(head.freeze())),
            Some(Ok(c)) => head.extend_from_slice(&c),
            Some(Err(e)) => {
                let (sink, stream) = body_channel();
                sink.fail(format!("the body was cut off: {e}"));
                return BodyStart::Whole(Body::Stream(StreamSlot::new(stream)));
            }
        }
    }
    BodyStart::Streaming(head.freeze())
}

/// Writes `head`, then the rest of `rest`, into `sink` (run as a task).
pub async fn feed<S, E>(head: Bytes, rest: S, sink: BodySink)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if !sink.send(head).await {
        return;
    }
    // Joined as they arrive: the peer connection delivers small chunks, and
    // each one the worker reads costs it CPU time.
    let mut rest = rest.fuse();
    while let Some(chunk) = next_joined(&mut rest).await {
        match chunk {
            Ok(c) => {
                if !sink.send(c).await {
                    return;
                }
            }
            Err(e) => return sink.fail(format!("the body was cut off: {e}")),
        }
    }
    sink.finish();
}

/// A body that continues a stream after `first`: bytes when it is short and
/// complete, else a [`Body::Stream`] fed by a task (bounded channel).
pub async fn body_after<S, E>(first: Bytes, mut rest: S) -> Option<Body>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let head = match start_body(first, &mut rest).await {
        BodyStart::Whole(body) => return Some(body),
        BodyStart::Streaming(head) => head,
    };
    let (sink, stream) = body_channel();
    tokio::spawn(feed(head, rest, sink));
    Some(Body::Stream(StreamSlot::new(stream)))
}

/// A body as a stream of chunks (empty for none).
pub fn body_stream(
    body: Option<Body>,
) -> futures::stream::BoxStream<'static, Result<Bytes, String>> {
    match body {
        None => futures::stream::empty().boxed(),
        Some(Body::Bytes(b)) => futures::stream::once(async move { Ok(b) }).boxed(),
        Some(Body::Stream(slot)) => match slot.take() {
            None => {
                futures::stream::once(async { Err("the body was already read".to_owned()) }).boxed()
            }
            Some(s) => {
                futures::stream::unfold(s, |mut s| async move { s.next().await.map(|c| (c, s)) })
                    .boxed()
            }
        },
    }
}

/// What a remote call can end in besides an answer.
pub enum Outcome {
    Answered(Result<InvokeResponse, InvokeError>),
    Moved {
        node: String,
        epoch: u64,
    },
    /// The event never reached the peer (no connection): safe to retry.
    NotDelivered(String),
    /// The peer took the event but its answer did not come (in time, or at
    /// all): the event may have run.
    Lost(String),
    /// The peer refused the message (secret mismatch, malformed): a
    /// configuration error, not worth retrying.
    Refused(String),
}

/// A body stream that fails when no chunk arrives for `idle`.
fn with_idle_timeout<S, E>(
    stream: S,
    idle: Duration,
) -> futures::stream::BoxStream<'static, Result<Bytes, String>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display + Send,
{
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut s = state?;
        match tokio::time::timeout(idle, s.next()).await {
            Err(_) => Some((
                Err(format!("no data from the owner for {} s", idle.as_secs())),
                None,
            )),
            Ok(None) => None,
            Ok(Some(Ok(c))) => Some((Ok(c), Some(s))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
        }
    })
    .boxed()
}

/// The pooled client for calls to other nodes.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    /// `https` with `cluster.peer_ca`.
    scheme: &'static str,
    secret: String,
    me: String,
    /// Bounds reaching the peer and every gap in a body.
    timeout: Duration,
    /// Bounds the owner's run of the event (as a local call's response timeout).
    answer_timeout: Duration,
}

impl PeerClient {
    pub fn new(
        secret: String,
        me: String,
        timeout: Duration,
        answer_timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<PeerClient, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy();
        let scheme = match ca {
            None => "http",
            Some(pem) => {
                // Peers are verified against the cluster's CA only.
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| format!("cluster.peer_ca is not a PEM certificate: {e}"))?;
                if certs.is_empty() {
                    return Err("cluster.peer_ca holds no certificate".into());
                }
                builder = builder
                    .use_rustls_tls()
                    .tls_built_in_root_certs(false)
                    .http1_only();
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
                "https"
            }
        };
        let http = builder
            .build()
            .map_err(|e| format!("cannot make the peer client: {e}"))?;
        Ok(PeerClient {
            http,
            scheme,
            secret,
            me,
            timeout,
            answer_timeout,
        })
    }

    /// Sends one event to `peer` (host:port) and returns its answer.
    pub async fn call(
        &self,
        peer: &str,
        address: &ObjectAddress,
        epoch: u64,
        request_id: u64,
        request: InvokeRequest,
    ) -> Outcome {
        let head = CallHead {
            object: address.into(),
            epoch,
            from: self.me.clone(),
            request_id,
            depth: request.depth,
            method: request.method,
            url: request.url,
            headers: encode_headers(&request.headers),
            body: request.body.is_some(),
        };
        let framed = frame(&head);
        let sent = framed.len() as u64;
        let body = futures::stream::once(async move { Ok::<_, String>(framed) })
            .chain(body_stream(request.body));
        metrics::counter!(super::FORWARDED_BYTES, "direction" => "out").increment(sent);
        let send = self
            .http
            .post(format!("{}://{peer}{PATH}", self.scheme))
            .header(SECRET_HEADER, &self.secret)
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let response = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => {
                return Outcome::Lost(format!(
                    "it did not take the call within {} s",
                    self.timeout.as_secs()
                ))
            }
            Ok(Err(e)) if e.is_connect() => return Outcome::NotDelivered(e.to_string()),
            Ok(Err(e)) => return Outcome::Lost(e.to_string()),
            Ok(Ok(r)) => r,
        };
        if !response.status().is_success() {
            return Outcome::Refused(format!("it refused the call: {}", response.status()));
        }
        // The peer has the event; its answer comes when the object has run it.
        let mut stream = with_idle_timeout(response.bytes_stream(), self.answer_timeout);
        let (reply, rest) = match read_head::<ReplyHead, _, _>(&mut stream).await {
            Err(e) => return Outcome::Lost(e),
            Ok(r) => r,
        };
        let stream = with_idle_timeout(stream, self.timeout);
        match reply {
            ReplyHead::Moved { node, epoch } => Outcome::Moved { node, epoch },
            ReplyHead::Failed { kind, message } => {
                Outcome::Answered(Err(error_from_wire(&kind, message)))
            }
            ReplyHead::Response {
                status,
                headers,
                body,
                rpc,
            } => {
                let headers = match decode_headers(headers) {
                    Ok(h) => h,
                    Err(e) => return Outcome::Lost(e),
                };
                let body = if body {
                    body_after(rest, stream).await
                } else {
                    None
                };
                Outcome::Answered(Ok(InvokeResponse {
                    status,
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| (k.into_bytes(), v))
                        .collect(),
                    body,
                    websocket: None,
                    encode_manually: false,
                    // The caller routes stubs to the object (`js::rpc::ObjectRoute`).
                    rpc: rpc.map(|(session, count)| crate::js::rpc::RpcExports {
                        session,
                        count,
                        route: None,
                    }),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heads_round_trip_and_bad_frames_are_refused() {
        let head = ReplyHead::Moved {
            node: "pop-2".into(),
            epoch: 7,
        };
        let mut framed = frame(&head).to_vec();
        framed.extend_from_slice(b"tail");
        let mut s = futures::stream::iter(
            framed
                .chunks(3)
                .map(|c| Ok::<_, String>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (back, rest): (ReplyHead, Bytes) = read_head(&mut s).await.expect("parses");
        assert_eq!(back, head);
        assert!(
            b"tail".starts_with(&rest),
            "the bytes after the head are kept"
        );

        let mut huge = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(&[
            0xff, 0xff, 0xff, 0xff,
        ]))]);
        assert!(read_head::<ReplyHead, _, _>(&mut huge).await.is_err());
        let mut junk = futures::stream::iter(vec![Ok::<_, String>(frame(&"not a head"))]);
        assert!(read_head::<ReplyHead, _, _>(&mut junk).await.is_err());
        let mut short = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(&[0, 0]))]);
        assert!(read_head::<ReplyHead, _, _>(&mut short).await.is_err());
    }

    #[test]
    fn errors_keep_their_kind() {
        for e in [
            InvokeError::Exception("TypeError: x".into()),
            InvokeError::CpuLimit,
            InvokeError::Timeout(5),
            InvokeError::Cluster("down (retryable)".into()),
        ] {
            let (k, m) = error_to_wire(&e);
            assert_eq!(error_from_wire(&k, m), e);
        }
    }
}
