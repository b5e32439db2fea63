//! Workers KV as the engine sees it: the [`KvBackend`] interface the node plugs in
//! (implemented by `state::kv`), and the `op_kv_*` ops behind the `KVNamespace`
//! binding in `runtime/20_kv.js`.
//!
//! The engine layer does not depend on storage: the node hands every isolate a
//! `HostServices` with the backend, and a bound isolate may reach only the
//! namespaces its worker was deployed with ([`KvAccess`]), whatever its JS does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use deno_core::{op2, v8, JsBuffer, ToJsBuffer};
use serde::{Deserialize, Serialize};

/// A stored value with what was stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct KvValue {
    pub value: Bytes,
    /// JSON text of the metadata, as given at `put`.
    pub metadata: Option<String>,
    /// Absolute expiration, seconds since the Unix epoch.
    pub expiration: Option<u64>,
}

/// Options of a `put`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvPutOptions {
    pub expiration: Option<f64>,
    pub expiration_ttl: Option<f64>,
    /// JSON text of the metadata.
    pub metadata: Option<String>,
}

/// Options of a `list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KvListOptions {
    pub prefix: Option<String>,
    pub limit: Option<f64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KvListKey {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// The result of a `list`, shaped as Workers returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KvListResult {
    pub keys: Vec<KvListKey>,
    pub list_complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A KV operation that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, deno_error::JsError)]
pub enum KvError {
    /// Bad input (a limit, a bad key, a bad option): a TypeError in JS, a 4xx on
    /// the control plane.
    #[class(type)]
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[class(generic)]
    #[error("{0}")]
    Unavailable(String),
}

pub type KvFuture<T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send>>;

/// The node's KV implementation.
pub trait KvBackend: Send + Sync + 'static {
    /// `cache_ttl`: seconds a value read from the origin may be served from the
    /// edge cache (None: the node's default).
    fn get(&self, namespace: &str, key: &str, cache_ttl: Option<u64>) -> KvFuture<Option<KvValue>>;
    fn put(&self, namespace: &str, key: &str, value: Bytes, options: KvPutOptions) -> KvFuture<()>;
    fn delete(&self, namespace: &str, key: &str) -> KvFuture<()>;
    fn list(&self, namespace: &str, options: KvListOptions) -> KvFuture<KvListResult>;
}

/// What a bound isolate may use: the backend and its worker's namespaces
/// (binding name → namespace).
pub struct KvAccess {
    pub backend: Arc<dyn KvBackend>,
    pub namespaces: HashMap<String, String>,
}

/// The backend and namespace behind `binding`, if the calling request may do
/// KV I/O now.
fn access(
    scope: &mut v8::HandleScope,
    binding: &str,
    api: &str,
) -> Result<(Arc<dyn KvBackend>, String), KvError> {
    super::context::assert_live(scope, api).map_err(|e| KvError::Unavailable(e.to_string()))?;
    let state = deno_core::JsRuntime::op_state_from(scope);
    let state = state.borrow();
    let access = state
        .try_borrow::<KvAccess>()
        .ok_or_else(|| KvError::Unavailable("Workers KV is not available on this node".into()))?;
    let namespace = access.namespaces.get(binding).ok_or_else(|| {
        KvError::Invalid(format!(
            "'{binding}' is not a KV namespace binding of this worker"
        ))
    })?;
    Ok((access.backend.clone(), namespace.clone()))
}

type GetResult = Option<(ToJsBuffer, Option<String>, Option<u64>)>;

/// `[value bytes, metadata JSON or null, expiration or null]`, or null.
#[op2(async)]
#[serde]
pub fn op_kv_get(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] key: String,
    cache_ttl: f64,
) -> impl Future<Output = Result<GetResult, KvError>> {
    let access = access(scope, &binding, "KV get()");
    async move {
        let (backend, namespace) = access?;
        let ttl = (cache_ttl > 0.0).then_some(cache_ttl as u64);
        let value = backend.get(&namespace, &key, ttl).await?;
        Ok(value.map(|v| (ToJsBuffer::from(v.value.to_vec()), v.metadata, v.expiration)))
    }
}

#[op2(async)]
pub fn op_kv_put(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] key: String,
    #[buffer] value: JsBuffer,
    #[serde] options: KvPutOptions,
) -> impl Future<Output = Result<(), KvError>> {
    let access = access(scope, &binding, "KV put()");
    let value = Bytes::copy_from_slice(&value);
    async move {
        let (backend, namespace) = access?;
        backend.put(&namespace, &key, value, options).await
    }
}

#[op2(async)]
pub fn op_kv_delete(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] key: String,
) -> impl Future<Output = Result<(), KvError>> {
    let access = access(scope, &binding, "KV delete()");
    async move {
        let (backend, namespace) = access?;
        backend.delete(&namespace, &key).await
    }
}

#[op2(async)]
#[serde]
pub fn op_kv_list(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[serde] options: KvListOptions,
) -> impl Future<Output = Result<KvListResult, KvError>> {
    let access = access(scope, &binding, "KV list()");
    async move {
        let (backend, namespace) = access?;
        backend.list(&namespace, options).await
    }
}
