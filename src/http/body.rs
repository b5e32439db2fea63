//! Reading a request body with a size limit, so an oversized body becomes a 413 in
//! the error shape (and is never buffered past the limit), or handing it to a
//! worker as a stream.

use actix_web::http::StatusCode;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::HttpError;
use crate::js::{body_channel, next_joined, Body, StreamSlot};

pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, HttpError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::bad_request("bad_body", format!("cannot read the request body: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than the limit of {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Bodies up to this size are read into memory before the worker starts; longer
/// ones are streamed to it.
const BUFFER_UP_TO: usize = 64 << 10;

/// A request body for a worker: small bodies as bytes, larger ones as a stream
/// the worker pulls from while the client is still sending (bounded memory
/// whatever the size). A declared `Content-Length` over `limit` is a 413 before
/// the worker runs; a streamed body that runs past `limit` fails the worker's read
/// with a TypeError.
pub async fn read_or_stream(
    mut payload: web::Payload,
    limit: usize,
    declared: Option<u64>,
) -> Result<Option<Body>, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut head = BytesMut::new();
    loop {
        match payload.next().await {
            None => {
                return Ok((!head.is_empty()).then(|| Body::Bytes(head.freeze())));
            }
            Some(Err(e)) => {
                return Err(HttpError::bad_request(
                    "bad_body",
                    format!("cannot read the request body: {e}"),
                ))
            }
            Some(Ok(chunk)) => {
                if head.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                head.extend_from_slice(&chunk);
                if head.len() > BUFFER_UP_TO {
                    break;
                }
            }
        }
    }
    let (sink, stream) = body_channel();
    let mut sent = head.len();
    actix_web::rt::spawn(async move {
        if !sink.send(head.freeze()).await {
            return;
        }
        let mut payload = payload.fuse();
        while let Some(chunk) = next_joined(&mut payload).await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => return sink.fail(format!("cannot read the request body: {e}")),
            };
            sent += chunk.len();
            if sent > limit {
                return sink.fail(format!(
                    "request body is larger than the limit of {limit} bytes"
                ));
            }
            if !sink.send(chunk).await {
                // The worker no longer reads it.
                return;
            }
        }
        sink.finish();
    });
    Ok(Some(Body::Stream(StreamSlot::new(stream))))
}
