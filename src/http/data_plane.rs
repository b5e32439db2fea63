//! The data plane: every request is routed to a worker and run in one of its
//! isolates.
//!
//! Routing: `<worker>.workers.localhost` names a worker directly; anything else
//! goes through the route table (cache → trie → the published deployments). No
//! match is a 404 in the error shape. A worker's failures map to statuses the way
//! Workers does it: an exception or a non-Response is a 500 with a generic body
//! (the details go to the log), a CPU or memory limit is a 503 naming the limit.
//! A deployment with static assets answers from them before its worker
//! (`state::assets`), unless `run_worker_first` sends the path to the worker.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::RwLock;

use super::body::read_or_stream;
use super::encoding::{self, Plan};
use super::error::error_body;
use super::metrics::{ASSET_RESPONSES, REQUESTS, REQUEST_SECONDS};
use super::routes::RouteTable;
use super::tls::ConnInfo;
use super::websocket::{is_upgrade, OpenSockets};
use crate::actors::{next_request_id, Deployment, WorkersView};
use crate::js::script::Cancel;
use crate::js::{Body, BodyStream, InvokeError, InvokeRequest, InvokeResponse};
use crate::state::assets::{AssetRequest, AssetStore, Served};

const WORKERS_LOCALHOST: &str = ".workers.localhost";

/// Client WebSockets per worker when the config sets no cap.
pub const DEFAULT_SOCKETS_PER_WORKER: usize = 10_000;

/// Shared state of the data plane's handlers.
pub struct DataPlane {
    view: WorkersView,
    routes: RwLock<(u64, Arc<RouteTable>)>,
    body_limit: usize,
    /// `request.cf.colo`.
    colo: String,
    /// Plain-HTTP requests are redirected to HTTPS on this port.
    redirect_to: Option<u16>,
    /// Client WebSockets open, per worker, and the cap on them.
    sockets: Arc<OpenSockets>,
    sockets_per_worker: usize,
    /// Where deployments' static assets are (none: assets are not served).
    assets: Option<Arc<AssetStore>>,
    /// The node is stopping: every response closes its connection.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl DataPlane {
    /// The flag that makes every response close its connection (set when
    /// the node starts to stop).
    pub fn closing(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.closing.clone()
    }

    pub fn new(view: WorkersView, body_limit: usize) -> Self {
        DataPlane {
            view,
            routes: RwLock::new((u64::MAX, Arc::new(RouteTable::build([])))),
            body_limit,
            colo: "local".into(),
            redirect_to: None,
            sockets: Arc::default(),
            sockets_per_worker: DEFAULT_SOCKETS_PER_WORKER,
            assets: None,
            closing: Arc::default(),
        }
    }

    /// Serves deployments' static assets from `store`.
    pub fn with_assets(mut self, store: Arc<AssetStore>) -> Self {
        self.assets = Some(store);
        self
    }

    /// At most `n` client WebSockets open per worker on this node.
    pub fn with_socket_cap(mut self, n: usize) -> Self {
        self.sockets_per_worker = n;
        self
    }

    /// The PoP's name in `request.cf.colo`.
    pub fn with_colo(mut self, colo: &str) -> Self {
        self.colo = colo.to_owned();
        self
    }

    /// Plain-HTTP requests get a 308 to `https:` on `port`.
    pub fn redirecting_to(mut self, port: u16) -> Self {
        self.redirect_to = Some(port);
        self
    }

    /// The deployment serving `host` (no port) and `path`.
    pub fn resolve(&self, host: &str, path: &str) -> Option<Arc<Deployment>> {
        if let Some(name) = host.strip_suffix(WORKERS_LOCALHOST) {
            if let Some(d) = self.view.get(name) {
                return Some(d);
            }
        }
        let published = self.view.current();
        let table = {
            let cached = self.routes.read();
            if cached.0 == published.generation {
                cached.1.clone()
            } else {
                drop(cached);
                let table =
                    Arc::new(RouteTable::build(published.workers.values().flat_map(
                        |d| d.routes.iter().map(move |r| (r.as_str(), d.name())),
                    )));
                *self.routes.write() = (published.generation, table.clone());
                table
            }
        };
        let name = table.lookup(host, path)?;
        published.workers.get(&*name).cloned()
    }
}

fn host_of(req: &HttpRequest) -> String {
    let raw = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    raw.to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Whether a `Host` header is a host name or IP literal with an optional
/// port in range (anything else is a 400, before any worker sees it).
fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    name_ok && port_ok
}

/// `request.cf`: what this PoP knows of the request's connection, with the
/// names and types Workers uses (TLS fields empty on plain HTTP, as there).
fn cf_json(req: &HttpRequest, conn: Option<&ConnInfo>, colo: &str) -> String {
    let protocol = match req.version() {
        actix_web::http::Version::HTTP_2 => "HTTP/2",
        actix_web::http::Version::HTTP_10 => "HTTP/1.0",
        actix_web::http::Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    };
    let (version, cipher) = conn
        .and_then(|c| c.tls.as_ref())
        .map(|(v, c)| (*v, c.as_str()))
        .unwrap_or(("", ""));
    let mut cf = serde_json::json!({
        "colo": colo,
        "httpProtocol": protocol,
        "tlsVersion": version,
        "tlsCipher": cipher,
    });
    if let Some(rtt) = conn.and_then(|c| c.rtt_ms) {
        cf["clientTcpRtt"] = rtt.into();
    }
    cf.to_string()
}

/// A 308 to the same URL on `https:` (the plain listener, when `[tls]`
/// says `plain_http = "redirect"`).
fn redirect_to_https(req: &HttpRequest, host: &str, port: u16) -> HttpResponse {
    let name = strip_port(host);
    let authority = if port == 443 {
        name.to_owned()
    } else {
        format!("{name}:{port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    HttpResponse::PermanentRedirect()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("https://{authority}{path}"),
        ))
        .finish()
}

/// The catch-all handler of the data plane.
pub async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    plane: web::Data<DataPlane>,
) -> HttpResponse {
    let mut response = serve_request(req, payload, plane.clone()).await;
    // (An upgrade's 101 keeps its own connection type.)
    if plane.closing.load(std::sync::atomic::Ordering::Relaxed)
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        // The node is stopping: the client's next request goes elsewhere.
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
    response
}

async fn serve_request(
    req: HttpRequest,
    payload: web::Payload,
    plane: web::Data<DataPlane>,
) -> HttpResponse {
    let started = Instant::now();
    let host = host_of(&req);
    if !host.is_empty() && !valid_host(&host) {
        return error_body(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the Host header is not a valid host name with an optional port",
        );
    }
    if let Some(port) = plane.redirect_to {
        let plain = req.conn_data::<ConnInfo>().is_none_or(|c| c.tls.is_none());
        if plain && !host.is_empty() {
            return redirect_to_https(&req, &host, port);
        }
    }
    let hostname = strip_port(&host);
    let Some(deployment) = plane.resolve(hostname, req.path()) else {
        return error_body(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no worker is routed for {hostname}{}", req.path()),
        );
    };
    let worker = deployment.name().to_owned();
    // Static assets answer before the worker, unless the worker runs first
    // for this path (`run_worker_first`) or the request is an upgrade.
    if let (Some(assets), Some(store)) = (&deployment.script.assets, &plane.assets) {
        let path = crate::state::assets::decode_path(req.path());
        if !assets.run_worker_first.applies(&path) && !is_upgrade(&req) {
            let headers: Vec<(String, Vec<u8>)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let request = AssetRequest {
                method: req.method().as_str(),
                path: &path,
                query: Some(req.query_string()),
                headers: &headers,
            };
            let account = &deployment.script.account;
            if let Served::Response(r) =
                crate::state::assets::serve(store, account, assets, &request, assets.has_worker)
            {
                let head_length = (req.method() == actix_web::http::Method::HEAD)
                    .then(|| {
                        r.headers
                            .iter()
                            .find(|(k, _)| k.as_slice() == b"content-length")
                            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                    })
                    .flatten();
                let status = r.status.to_string();
                let mut response = to_http(&worker, 0, Ok(r), None);
                if let Some(len) = head_length {
                    // HEAD: the file's length, and no body.
                    response = response.set_body(HeadBody(len)).map_into_boxed_body();
                }
                metrics::counter!(ASSET_RESPONSES, "worker" => worker.clone(), "status" => status.clone())
                    .increment(1);
                metrics::counter!(REQUESTS, "worker" => worker.clone(), "status" => status)
                    .increment(1);
                metrics::histogram!(REQUEST_SECONDS, "worker" => worker)
                    .record(started.elapsed().as_secs_f64());
                return response;
            }
        }
    }
    let conn = req.conn_data::<ConnInfo>();
    let secure = conn.is_some_and(|c| c.tls.is_some());
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A GET or HEAD body is never handed to the worker (as in Workers), so it
    // is not waited for either: an `Upgrade` request's "body" is the rest of
    // the connection, and waiting for its end would hang the request.
    let bodiless = matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    // A WebSocket upgrade keeps the connection (its "body") for the socket,
    // if the worker accepts one; the worker may hold only so many.
    let mut upgrade = None;
    if bodiless && is_upgrade(&req) {
        match plane.sockets.hold(&worker, plane.sockets_per_worker) {
            Some(held) => upgrade = Some(held),
            None => {
                return error_body(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_websockets",
                    &format!(
                        "worker {worker} has {} WebSockets open on this node, its limit",
                        plane.sockets_per_worker
                    ),
                )
            }
        }
    }
    let mut payload = Some(payload);
    let read = if bodiless {
        if upgrade.is_none() {
            payload = None;
        }
        Ok(None)
    } else {
        match payload.take() {
            Some(p) => read_or_stream(p, plane.body_limit, declared).await,
            None => Ok(None),
        }
    };
    let accept_encoding = req
        .headers()
        .get(actix_web::http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = match read {
        Err(e) => actix_web::ResponseError::error_response(&e),
        Ok(body) => {
            let method = req.method().as_str().to_owned();
            let has_body = !(method == "GET" || method == "HEAD") && body.is_some();
            let scheme = if secure { "https" } else { "http" };
            let url = format!(
                "{scheme}://{}{}",
                if host.is_empty() { "localhost" } else { &host },
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let headers = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let request = InvokeRequest {
                cf: Some(cf_json(&req, conn, &plane.colo)),
                depth: 0,
                entrypoint: None,
                props: None,
                cancel: Default::default(),
                method,
                url,
                headers,
                body: if has_body { body } else { None },
            };
            let request_id = next_request_id();
            // Dropped with this handler when the client goes away: the
            // isolate then ends the request (see `Cancel`).
            let (_client_present, cancel) = Cancel::guard();
            let request = InvokeRequest { cancel, ..request };
            let mut result = deployment.invoke(request_id, request).await;
            // A 101 with a socket end: the client's connection becomes the socket.
            let socket = match &mut result {
                Ok(r) if r.status == 101 => r.websocket.take().and_then(|s| s.take()),
                _ => None,
            };
            match (socket, upgrade, payload) {
                (Some(end), Some(held), Some(payload)) => {
                    let headers = result.map(|r| r.headers).unwrap_or_default();
                    super::websocket::upgrade(&req, payload, end, &headers, &worker, held)
                }
                (Some(_), _, _) => error_body(
                    StatusCode::BAD_REQUEST,
                    "bad_websocket_upgrade",
                    "the worker answered with a WebSocket, but the request is not a WebSocket upgrade",
                ),
                _ => to_http(&worker, request_id, result, accept_encoding.as_deref()),
            }
        }
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "worker" => worker.clone(), "status" => status).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "worker" => worker)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A HEAD response's body: the length the GET would have, and no bytes.
struct HeadBody(u64);

impl actix_web::body::MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.0)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// Headers the HTTP layer owns; a worker's values for them are not copied.
fn is_connection_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"connection")
        || name.eq_ignore_ascii_case(b"keep-alive")
}

/// A worker's outcome as the client's response; `accept` is the client's
/// Accept-Encoding, for the runtime's side of Content-Encoding
/// (`encoding.rs`).
fn to_http(
    worker: &str,
    request_id: u64,
    result: Result<InvokeResponse, InvokeError>,
    accept: Option<&str>,
) -> HttpResponse {
    match result {
        // A 101 needs a socket to switch to; without one it is no response.
        Ok(r) if r.status == 101 => {
            tracing::error!(
                worker,
                request_id,
                "worker returned a 101 without a WebSocket"
            );
            error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_bad_response",
                "the worker returned a 101 response without a WebSocket",
            )
        }
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut builder = HttpResponse::build(status);
            let plan = encoding::plan(&r.headers, r.encode_manually, r.body.is_some(), accept);
            for (name, value) in &r.headers {
                if is_connection_header(name) {
                    continue;
                }
                // The length changes with the coding; a body the client
                // cannot take goes plain.
                if plan != Plan::AsIs && name.eq_ignore_ascii_case(b"content-length") {
                    continue;
                }
                if plan == Plan::Plain && name.eq_ignore_ascii_case(b"content-encoding") {
                    continue;
                }
                if let (Ok(n), Ok(v)) =
                    (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
                {
                    builder.append_header((n, v));
                }
            }
            match (r.body, plan) {
                (Some(Body::Bytes(b)), Plan::Compress(coding)) => builder.streaming(
                    encoding::compress(coding, futures::stream::once(async move { Ok(b) })),
                ),
                (Some(Body::Bytes(b)), _) => builder.body(b),
                (Some(Body::Stream(slot)), plan) => match slot.take() {
                    Some(stream) => {
                        let body = stream_body(worker.to_owned(), request_id, stream);
                        match plan {
                            Plan::Compress(coding) => {
                                builder.streaming(encoding::compress(coding, body))
                            }
                            _ => builder.streaming(body),
                        }
                    }
                    None => builder.finish(),
                },
                (None, _) => builder.finish(),
            }
        }
        Err(InvokeError::Exception(stack)) => {
            tracing::error!(worker, request_id, "worker threw an exception: {stack}");
            error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_exception",
                "the worker threw an exception",
            )
        }
        Err(InvokeError::BadResponse(what)) => {
            tracing::error!(worker, request_id, "worker returned no Response: {what}");
            error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_bad_response",
                "the worker did not return a Response",
            )
        }
        Err(InvokeError::CpuLimit) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "cpu_limit_exceeded",
            "the worker exceeded its CPU time limit",
        ),
        Err(InvokeError::MemoryLimit) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_limit_exceeded",
            "the worker exceeded its memory limit",
        ),
        Err(InvokeError::NeverResponds) => {
            tracing::error!(
                worker,
                request_id,
                "The script will never generate a response."
            );
            error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "worker_never_responded",
                "The script will never generate a response.",
            )
        }
        Err(e @ InvokeError::Timeout(_)) => {
            tracing::warn!(worker, request_id, error = %e, "worker timed out");
            error_body(
                StatusCode::GATEWAY_TIMEOUT,
                "worker_timeout",
                &e.to_string(),
            )
        }
        Err(
            e @ (InvokeError::Unavailable(_) | InvokeError::Stopping | InvokeError::Cluster(_)),
        ) => {
            tracing::warn!(worker, request_id, error = %e, "worker unavailable");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_unavailable",
                &e.to_string(),
            )
        }
    }
}

/// A worker's streamed response body as actix-web's body stream. An error midway
/// aborts the response (the client sees it truncated) and is logged; a client
/// that goes away drops the stream, which tells the worker's writer to stop.
fn stream_body(
    worker: String,
    request_id: u64,
    stream: BodyStream,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold(Some(stream), move |state| {
        let worker = worker.clone();
        async move {
            let mut stream = state?;
            match stream.next().await {
                None => None,
                Some(Ok(chunk)) => Some((Ok(chunk), Some(stream))),
                Some(Err(e)) => {
                    tracing::warn!(worker, request_id, "response body stream failed: {e}");
                    metrics::counter!(super::metrics::STREAM_ERRORS).increment(1);
                    Some((Err(std::io::Error::other(e)), None))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::valid_host;

    #[test]
    fn host_headers() {
        for ok in [
            "a.example",
            "a.example:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "x_y.localhost",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "x:99999", "x:", "x:-1", "a b", "[::1", "[zz]:1", "x:1:2", "\u{0}",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
