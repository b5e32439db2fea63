//! The Cache API as the engine sees it: the [`CacheBackend`] the node plugs in
//! (implemented by `state::http_cache`) and the `op_cache_*` ops behind
//! `caches.default` / `caches.open()` in `runtime/40_cache.js`.
//!
//! Every worker has its own caches: the key always includes the worker's
//! storage id (from the isolate's `WorkerIdentity`, never from JS), so one
//! tenant can neither read nor poison another's cached responses, and a worker
//! deployed again under a deleted worker's name starts with empty caches.

use std::sync::Arc;

use bytes::Bytes;
use deno_core::{op2, JsBuffer, OpState, ToJsBuffer};
use serde::Serialize;

use super::extension::WorkerIdentity;

/// A cached response.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Where cache entries live. Keys are `(owner, cache name, URL)`, the owner
/// being the worker's storage id;
/// `accept_encoding` is the request's `Accept-Encoding`, the one request header
/// that `Vary` is honoured for.
pub trait CacheBackend: Send + Sync {
    fn lookup(
        &self,
        worker: &str,
        cache: &str,
        url: &str,
        accept_encoding: &str,
    ) -> Option<CachedResponse>;
    /// Stores `response` if its headers allow it; returns whether it was stored.
    fn store(
        &self,
        worker: &str,
        cache: &str,
        url: &str,
        accept_encoding: &str,
        response: CachedResponse,
    ) -> bool;
    fn remove(&self, worker: &str, cache: &str, url: &str) -> bool;
    /// Forgets every entry of `owner` (its worker was deleted).
    fn purge(&self, owner: &str);
}

/// The backend, in the isolate's `OpState` once bound.
#[derive(Clone)]
pub struct CacheAccess(pub Arc<dyn CacheBackend>);

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum CacheError {
    #[class(type)]
    #[error("{0}")]
    Invalid(String),
}

fn access(state: &OpState) -> Result<(Arc<dyn CacheBackend>, Arc<str>), CacheError> {
    let backend = state
        .try_borrow::<CacheAccess>()
        .ok_or_else(|| CacheError::Invalid("the Cache API is not available here".into()))?;
    let worker = state
        .try_borrow::<WorkerIdentity>()
        .ok_or_else(|| CacheError::Invalid("the Cache API is not available here".into()))?;
    Ok((backend.0.clone(), worker.storage.clone()))
}

#[derive(Serialize)]
pub struct MatchResult {
    status: u16,
    headers: Vec<(String, String)>,
    body: ToJsBuffer,
}

#[op2]
#[serde]
pub fn op_cache_match(
    state: &mut OpState,
    #[string] cache: &str,
    #[string] url: &str,
    #[string] accept_encoding: &str,
) -> Result<Option<MatchResult>, CacheError> {
    let (backend, worker) = access(state)?;
    Ok(backend
        .lookup(&worker, cache, url, accept_encoding)
        .map(|r| MatchResult {
            status: r.status,
            headers: r.headers,
            body: ToJsBuffer::from(r.body.to_vec()),
        }))
}

#[op2]
pub fn op_cache_put(
    state: &mut OpState,
    #[string] cache: &str,
    #[string] url: &str,
    #[string] accept_encoding: &str,
    #[smi] status: u16,
    #[serde] headers: Vec<(String, String)>,
    #[buffer] body: JsBuffer,
) -> Result<bool, CacheError> {
    let (backend, worker) = access(state)?;
    Ok(backend.store(
        &worker,
        cache,
        url,
        accept_encoding,
        CachedResponse {
            status,
            headers,
            body: Bytes::copy_from_slice(&body),
        },
    ))
}

#[op2(fast)]
pub fn op_cache_delete(
    state: &mut OpState,
    #[string] cache: &str,
    #[string] url: &str,
) -> Result<bool, CacheError> {
    let (backend, worker) = access(state)?;
    Ok(backend.remove(&worker, cache, url))
}
