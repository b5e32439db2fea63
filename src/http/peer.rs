//! The peer listener: where other nodes of the cluster deliver remote actor
//! messages for the Durable Objects this node owns (`cluster/peer.rs` has the
//! wire format and the client).
//!
//! Every request must carry the cluster secret (compared in constant time) or
//! it is refused with 401, logged and counted. The head is parsed with a size
//! bound and every name in it is validated before anything is looked up; a
//! malformed message is a 400, never a panic. The owner decides here, through
//! `DurableObjectDirectory::owner`, whether it still owns the object: if not it
//! answers "moved" with the owner it knows and the caller refreshes.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use futures::StreamExt;

use super::error::HttpError;
use crate::actors::directory::{DirectoryHandle, Owner};
use crate::actors::DurableObjectDirectory;
use crate::cluster::peer::{
    body_stream, decode_headers, encode_headers, error_to_wire, feed, frame, read_head, start_body,
    BodyStart, CallHead, ReplyHead, PATH, SECRET_HEADER,
};
use crate::cluster::{Cluster, FORWARDED_BYTES, PEER_REFUSED};
use crate::js::durable::ObjectAddress;
use crate::js::{body_channel, Body, InvokeError, InvokeRequest, StreamSlot};
use crate::state::names;

pub struct PeerPlane {
    pub cluster: Cluster,
    pub objects: Arc<DirectoryHandle>,
}

fn refused(reason: &'static str, status: StatusCode, message: String) -> HttpResponse {
    metrics::counter!(PEER_REFUSED, "reason" => reason).increment(1);
    tracing::warn!(reason, "peer message refused: {message}");
    let code = if status == StatusCode::UNAUTHORIZED {
        "unauthorized"
    } else {
        "bad_message"
    };
    HttpError::new(status, code, message).error_response()
}

fn check(head: &CallHead) -> Result<(), String> {
    let o = &head.object;
    names::check_worker(&o.worker).map_err(|e| e.0)?;
    names::check_storage_id(&o.storage).map_err(|e| e.0)?;
    names::check_class(&o.class_name).map_err(|e| e.0)?;
    names::check_object_id(&o.id).map_err(|e| e.0)?;
    Ok(())
}

/// The event's body: what followed the head, then the rest of the request
/// (streamed by a task on this worker, as actix's payload stays on it).
async fn body_after(first: Bytes, mut payload: web::Payload) -> Option<Body> {
    let head = match start_body(first, &mut payload).await {
        BodyStart::Whole(body) => return Some(body),
        BodyStart::Streaming(head) => head,
    };
    let (sink, stream) = body_channel();
    actix_web::rt::spawn(feed(head, payload, sink));
    Some(Body::Stream(StreamSlot::new(stream)))
}

async fn object(
    req: HttpRequest,
    mut payload: web::Payload,
    plane: web::Data<PeerPlane>,
) -> HttpResponse {
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !plane.cluster.secret_matches(given) {
        return refused(
            "secret",
            StatusCode::UNAUTHORIZED,
            format!(
                "wrong or missing cluster secret from {}",
                req.peer_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
        );
    }
    let (head, rest): (CallHead, Bytes) = match read_head(&mut payload).await {
        Ok(h) => h,
        Err(m) => return refused("malformed", StatusCode::BAD_REQUEST, m),
    };
    if let Err(m) = check(&head) {
        return refused("malformed", StatusCode::BAD_REQUEST, m);
    }
    let headers = match decode_headers(head.headers) {
        Ok(h) => h,
        Err(m) => return refused("malformed", StatusCode::BAD_REQUEST, m),
    };
    metrics::counter!(FORWARDED_BYTES, "direction" => "in").increment(rest.len() as u64);
    let body = if head.body {
        body_after(rest, payload).await
    } else {
        None
    };
    let address: ObjectAddress = head.object.into();
    let request = InvokeRequest {
        cf: None,
        method: head.method,
        url: head.url,
        headers,
        body,
        depth: head.depth,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
    };
    // The HTTP head goes out at once (the caller then knows the event was
    // delivered); the reply frame follows when the object has run it.
    let cluster = plane.cluster.clone();
    let objects = plane.objects.clone();
    let request_id = head.request_id;
    let answer = async move {
        // The caller found this node in the engine's record: a cached record
        // that says otherwise is read again before answering "moved".
        let owner = match DurableObjectDirectory::owner(Some(&cluster), &address, None, false).await
        {
            Ok(Owner::Local) => Ok(Owner::Local),
            _ => DurableObjectDirectory::owner(Some(&cluster), &address, None, true).await,
        };
        let (reply, body) = match owner {
            Ok(Owner::Local) => match objects.invoke_local(address, request_id, request).await {
                // The socket's end stays here and closes (1006 to the object).
                Ok(r) if r.websocket.is_some() => {
                    let (kind, message) = error_to_wire(&InvokeError::Exception(
                        "Error: a WebSocket cannot yet be relayed from a Durable Object on another PoP"
                            .into(),
                    ));
                    (ReplyHead::Failed { kind, message }, None)
                }
                Ok(r) => (
                    ReplyHead::Response {
                        status: r.status,
                        headers: encode_headers(&r.headers),
                        body: r.body.is_some(),
                        rpc: r.rpc.as_ref().map(|e| (e.session, e.count)),
                    },
                    r.body,
                ),
                Err(e) => {
                    let (kind, message) = error_to_wire(&e);
                    (ReplyHead::Failed { kind, message }, None)
                }
            },
            Ok(Owner::Remote { node, epoch, .. }) => (ReplyHead::Moved { node, epoch }, None),
            Err(e) => {
                let (kind, message) = error_to_wire(&e);
                (ReplyHead::Failed { kind, message }, None)
            }
        };
        futures::stream::once(async move { Ok::<_, String>(frame(&reply)) })
            .chain(body_stream(body))
    };
    let stream = futures::stream::once(answer)
        .flatten()
        .map(|c| c.map_err(std::io::Error::other));
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(stream)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::post().to(object))
        .default_service(web::to(|| async {
            HttpError::not_found("no such peer endpoint".to_owned()).error_response()
        }));
}
