//! Reading a request body with a size limit, so an oversized body becomes a 413 in
//! the error shape (and is never buffered past the limit).

use actix_web::http::StatusCode;
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::HttpError;

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
