//! Durable Objects as the engine sees them: the interfaces the node plugs in
//! ([`DurableObjectBackend`] routes a call to an object; [`ObjectStorage`] is an
//! object's own store) and the `op_do_*` ops behind `runtime/30_durable.js`.
//!
//! A worker's isolate reaches only the namespaces bound to it ([`DoAccess`]). An
//! object host's isolate serves many objects of one worker version and reaches
//! only their stores ([`ObjectStorages`], filled as objects activate). Which
//! object a storage call is for comes from the calling event's request context
//! (`context.rs`), as do the depth and subrequest count of a call to another
//! object: JS passes none of them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use deno_core::{op2, v8, JsBuffer, OpState, ToJsBuffer};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::body::Body;
use super::error::InvokeError;
use super::script::{InvokeRequest, InvokeResponse};

/// Which object a call is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectAddress {
    /// The worker whose deployment runs the object.
    pub worker: String,
    /// The worker's storage id (where the object's database lives; changes
    /// when a worker of the same name is deleted and deployed again).
    pub storage: String,
    pub class_name: String,
    /// 64 lowercase hex digits.
    pub id: String,
    /// The name it was derived from, when it was (`id.name`).
    pub name: Option<String>,
}

pub type ObjectFuture = Pin<Box<dyn Future<Output = Result<InvokeResponse, InvokeError>> + Send>>;

/// The node's object directory.
pub trait DurableObjectBackend: Send + Sync + 'static {
    /// Delivers one event (a fetch, or an RPC as method "RPC") to an object.
    fn invoke(
        &self,
        target: ObjectAddress,
        request_id: u64,
        request: InvokeRequest,
    ) -> ObjectFuture;

    /// [`DurableObjectBackend::invoke`] with a location hint: the region a
    /// new object should be placed in (`get(id, { locationHint })`).
    fn invoke_hinted(
        &self,
        target: ObjectAddress,
        _hint: Option<String>,
        request_id: u64,
        request: InvokeRequest,
    ) -> ObjectFuture {
        self.invoke(target, request_id, request)
    }
}

/// A cluster name (node id, region): 1–32 of `a-z 0-9 -`.
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A location hint as JS gave it: a region name, else none.
fn hint_of(hint: String) -> Option<String> {
    is_cluster_name(&hint).then_some(hint)
}

/// The directory, set once it is built (after the isolate threads).
pub type DurableObjectSlot = super::late_bound::LateBound<dyn DurableObjectBackend>;

/// What a bound worker isolate may call: its namespace bindings (binding name →
/// class name).
pub struct DoAccess {
    pub slot: DurableObjectSlot,
    pub worker: String,
    pub storage: String,
    pub namespaces: HashMap<String, String>,
}

/// Options of `storage.list()`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOptions {
    pub start: Option<String>,
    pub start_after: Option<String>,
    pub end: Option<String>,
    pub prefix: Option<String>,
    #[serde(default)]
    pub reverse: bool,
    pub limit: Option<usize>,
}

/// A storage call that failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, deno_error::JsError)]
pub enum DoError {
    #[class(type)]
    #[error("{0}")]
    Invalid(String),
    #[class(range)]
    #[error("{0}")]
    Range(String),
    #[class(generic)]
    #[error("{0}")]
    Failed(String),
}

/// One object's storage, as its isolate uses it. Writes are buffered until the
/// object's actor commits them; reads see them at once.
pub trait ObjectStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, DoError>;
    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), DoError>;
    fn delete(&self, key: &str) -> Result<bool, DoError>;
    fn list(&self, options: &ListOptions) -> Result<Vec<(String, Vec<u8>)>, DoError>;
    fn delete_all(&self) -> Result<(), DoError>;
    fn transaction_begin(&self) -> Result<(), DoError>;
    fn transaction_commit(&self) -> Result<(), DoError>;
    fn transaction_rollback(&self) -> Result<(), DoError>;
    /// The alarm time (ms since the epoch), or None.
    fn get_alarm(&self) -> Result<Option<u64>, DoError>;
    /// Sets (Some) or deletes (None) the alarm; a write like any other.
    fn set_alarm(&self, at_ms: Option<u64>) -> Result<(), DoError>;
    /// Runs one SQL statement (`ctx.storage.sql.exec`). Its writes commit with
    /// the event's other writes (behind the output gate).
    fn sql_exec(&self, query: &str, bindings: Vec<SqlValue>) -> Result<SqlResult, DoError>;
    /// Bytes the object's database uses.
    fn database_size(&self) -> Result<u64, DoError>;
    /// `blockConcurrencyWhile`: while any block is open, the object's actor
    /// delivers no event (calls nest).
    fn block_concurrency(&self, on: bool);
    /// Asks the object's actor to reset the object (drop the instance, fail
    /// what is queued; the next event constructs it afresh).
    fn request_reset(&self, reason: String);
    /// Writes made and not yet durable (outside an open `transaction()`, whose
    /// writes wait for its end).
    fn unflushed(&self) -> bool;
    /// Resolves once every write made so far is durable: the object's actor
    /// commits them without waiting for the event to end. `Err` if the commit
    /// failed (the object is then reset).
    fn request_flush(&self) -> futures::channel::oneshot::Receiver<Result<(), String>>;
}

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a statement produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
    pub rows_read: u64,
    pub rows_written: u64,
}

/// A binding as JS passes it: `[kind, value]` (0 null, 1 integer, 2 real,
/// 3 text, 4 bytes).
#[derive(Deserialize)]
pub struct SqlBinding(u8, Option<serde_json::Value>, Option<JsBuffer>);

#[derive(serde::Serialize)]
#[serde(untagged)]
enum SqlOut {
    Null(()),
    Number(f64),
    Text(String),
    Blob(ToJsBuffer),
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlOutput {
    column_names: Vec<String>,
    rows: Vec<Vec<SqlOut>>,
    rows_read: u64,
    rows_written: u64,
}

/// The storage of each Durable Object an object host's isolate serves, by slot,
/// in the isolate's `OpState`.
#[derive(Default)]
pub struct ObjectStorages(pub HashMap<u32, Rc<dyn ObjectStorage>>);

/// `idFromName`: a hash keyed by the namespace (worker and class), so the same
/// name gives the same id in that namespace and unrelated ids elsewhere.
pub fn id_from_name(worker: &str, class_name: &str, name: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"edged-durable-object-id-v1\0");
    h.update(worker.as_bytes());
    h.update(b"\0");
    h.update(class_name.as_bytes());
    h.update(b"\0");
    h.update(name.as_bytes());
    hex::encode(h.finalize())
}

pub fn valid_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn namespace(state: &OpState, binding: &str) -> Result<(String, String, String), DoError> {
    let access = state
        .try_borrow::<DoAccess>()
        .ok_or_else(|| DoError::Failed("Durable Objects are not available here".into()))?;
    let class = access.namespaces.get(binding).ok_or_else(|| {
        DoError::Invalid(format!(
            "'{binding}' is not a Durable Object binding of this worker"
        ))
    })?;
    Ok((access.worker.clone(), access.storage.clone(), class.clone()))
}

#[op2]
#[string]
pub fn op_do_id_from_name(
    state: &mut OpState,
    #[string] binding: &str,
    #[string] name: &str,
) -> Result<String, DoError> {
    let (worker, _, class) = namespace(state, binding)?;
    Ok(id_from_name(&worker, &class, name))
}

#[op2]
#[string]
pub fn op_do_id_unique() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The backend and address of a call from the current request to `id` in the
/// namespace bound as `binding`, with the call's depth (the caller's plus one),
/// counted as a subrequest of the caller.
fn target(
    scope: &mut v8::HandleScope,
    binding: &str,
    id: String,
    name: String,
    api: &str,
) -> Result<(Arc<dyn DurableObjectBackend>, ObjectAddress, u8), DoError> {
    if !valid_id(&id) {
        return Err(DoError::Invalid(
            "Invalid Durable Object ID: it must be 64 lowercase hexadecimal digits.".into(),
        ));
    }
    // Objects may call each other back (the input gate lets them), so chains
    // are bounded as worker-to-worker calls are.
    let depth = super::context::outgoing(scope, api).map_err(|e| DoError::Failed(e.to_string()))?;
    let state = deno_core::JsRuntime::op_state_from(scope);
    let state = state.borrow();
    let (worker, storage, class_name) = namespace(&state, binding)?;
    let backend =
        state.borrow::<DoAccess>().slot.get().ok_or_else(|| {
            DoError::Failed("Durable Objects are not available on this node".into())
        })?;
    let address = ObjectAddress {
        worker,
        storage,
        class_name,
        id,
        name: (!name.is_empty()).then_some(name),
    };
    Ok((backend, address, depth))
}

/// The caller sees the object's error message (`remote`), and limit or queue
/// failures as `overloaded` (the JS side sets the flags from the prefix).
fn remote_error(e: InvokeError) -> DoError {
    match e {
        InvokeError::Exception(stack) => DoError::Failed(super::error::remote_exception(&stack)),
        InvokeError::CpuLimit | InvokeError::MemoryLimit => {
            DoError::Failed(format!("Durable Object is overloaded: {e}; it was reset"))
        }
        InvokeError::Unavailable(m) if m.contains("overloaded") => DoError::Failed(m),
        InvokeError::Cluster(m) => DoError::Failed(m),
        other => DoError::Failed(format!("Durable Object unavailable: {other}")),
    }
}

type FetchResult = (
    u16,
    Vec<String>,
    Option<ToJsBuffer>,
    Option<u32>,
    Option<u32>,
);

#[allow(clippy::too_many_arguments)]
#[op2(async)]
#[serde]
pub fn op_do_fetch(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] id: String,
    #[string] name: String,
    #[string] hint: String,
    // (method, url, flat headers): one argument, as async ops take at most 8.
    #[serde] head: (String, String, Vec<String>),
    #[buffer] body: Option<JsBuffer>,
    #[smi] source: i32,
) -> impl Future<Output = Result<FetchResult, DoError>> {
    let (method, url, headers) = head;
    let target = target(scope, &binding, id, name, "Durable Object fetch()");
    let owner = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    // An untouched stream from Rust (a client's upload) goes on as a stream.
    let streamed = u32::try_from(source)
        .ok()
        .and_then(|rid| super::body::take_source(&mut state.borrow_mut(), rid));
    let body = match streamed {
        Some(stream) => Some(Body::Stream(super::body::StreamSlot::new(stream))),
        None => body.map(|b| Body::Bytes(bytes::Bytes::copy_from_slice(&b))),
    };
    async move {
        let (backend, address, depth) = target?;
        if super::script::mimics_event(&method, &url) {
            return Err(DoError::Invalid(format!("Fetch API cannot load: {url}")));
        }
        let request = InvokeRequest {
            entrypoint: None,
            props: None,
            cf: None,
            depth,
            cancel: Default::default(),
            method,
            url,
            headers: super::script::headers_from_flat(&headers),
            body,
        };
        let response = backend
            .invoke_hinted(address, hint_of(hint), 0, request)
            .await
            .map_err(remote_error)?;
        let headers = super::script::headers_to_flat(response.headers);
        // A streamed response stays streamed: the caller reads it as it comes.
        let (bytes, rid) = super::body::into_js(&state, response.body);
        let socket = super::websocket::into_js(&state, response.websocket, owner)
            .map_err(|e| DoError::Invalid(e.to_string()))?;
        Ok((response.status, headers, bytes, rid, socket))
    }
}

#[op2(async)]
#[serde]
pub fn op_do_rpc(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] id: String,
    #[string] name: String,
    #[string] method: String,
    #[buffer] args: JsBuffer,
    #[string] hint: String,
) -> impl Future<Output = Result<super::rpc::Answer, DoError>> {
    let target = if method.starts_with("__edged") {
        Err(DoError::Invalid(format!(
            "The RPC receiver does not implement the method \"{method}\"."
        )))
    } else {
        target(scope, &binding, id, name, "Durable Object RPC")
    };
    let args = bytes::Bytes::copy_from_slice(&args);
    let caller = super::context::current(scope);
    let contexts = super::context::contexts(&deno_core::JsRuntime::op_state_from(scope).borrow());
    async move {
        let (backend, address, depth) = target?;
        let request = InvokeRequest {
            entrypoint: None,
            props: None,
            cf: None,
            depth,
            cancel: Default::default(),
            method: "RPC".into(),
            url: format!("rpc:{method}"),
            headers: Vec::new(),
            body: Some(Body::Bytes(args)),
        };
        let hint = hint_of(hint);
        let response = backend
            .invoke_hinted(address.clone(), hint.clone(), 0, request)
            .await
            .map_err(remote_error)?;
        // Stubs reach the object itself, wherever it runs.
        let route = response.rpc.is_some().then(|| {
            Arc::new(super::rpc::ObjectRoute {
                backend,
                address,
                hint,
            }) as Arc<dyn super::rpc::StubRoute>
        });
        super::rpc::answer(contexts.as_ref(), caller, depth, response, route)
            .map_err(DoError::Failed)
    }
}

/// The storage of the Durable Object the calling request is an event of (the
/// slot comes from the request's context, never from JS).
fn storage(scope: &mut v8::HandleScope) -> Result<Rc<dyn ObjectStorage>, DoError> {
    let slot = super::context::current_slot(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let state = state.borrow();
    slot.and_then(|slot| {
        state
            .try_borrow::<ObjectStorages>()
            .and_then(|s| s.0.get(&slot).cloned())
    })
    .ok_or_else(|| {
        DoError::Invalid(
            "storage is only available inside a Durable Object that is still active".into(),
        )
    })
}

#[op2]
#[serde]
pub fn op_do_storage_get(
    scope: &mut v8::HandleScope,
    #[string] key: &str,
) -> Result<Option<ToJsBuffer>, DoError> {
    Ok(storage(scope)?.get(key)?.map(ToJsBuffer::from))
}

#[op2]
pub fn op_do_storage_put(
    scope: &mut v8::HandleScope,
    #[string] key: &str,
    #[buffer] value: JsBuffer,
) -> Result<(), DoError> {
    storage(scope)?.put(key, value.to_vec())
}

#[op2(nofast)]
pub fn op_do_storage_delete(
    scope: &mut v8::HandleScope,
    #[string] key: &str,
) -> Result<bool, DoError> {
    storage(scope)?.delete(key)
}

#[op2]
#[serde]
pub fn op_do_storage_list(
    scope: &mut v8::HandleScope,
    #[serde] options: ListOptions,
) -> Result<Vec<(String, ToJsBuffer)>, DoError> {
    Ok(storage(scope)?
        .list(&options)?
        .into_iter()
        .map(|(k, v)| (k, ToJsBuffer::from(v)))
        .collect())
}

#[op2(nofast)]
pub fn op_do_storage_delete_all(scope: &mut v8::HandleScope) -> Result<(), DoError> {
    storage(scope)?.delete_all()
}

#[op2(nofast)]
pub fn op_do_txn(scope: &mut v8::HandleScope, #[string] action: &str) -> Result<(), DoError> {
    let s = storage(scope)?;
    match action {
        "begin" => s.transaction_begin(),
        "commit" => s.transaction_commit(),
        "rollback" => s.transaction_rollback(),
        other => Err(DoError::Invalid(format!(
            "unknown transaction action '{other}'"
        ))),
    }
}

#[op2(nofast)]
pub fn op_do_block(scope: &mut v8::HandleScope, on: bool) -> Result<(), DoError> {
    storage(scope)?.block_concurrency(on);
    Ok(())
}

#[op2(nofast)]
pub fn op_do_reset(scope: &mut v8::HandleScope, #[string] reason: String) -> Result<(), DoError> {
    storage(scope)?.request_reset(reason);
    Ok(())
}

/// Whether any object in this isolate has writes that are not durable yet.
#[op2(fast)]
pub fn op_do_dirty(state: &mut OpState) -> bool {
    state
        .try_borrow::<ObjectStorages>()
        .is_some_and(|s| s.0.values().any(|o| o.unflushed()))
}

/// The output gate for outgoing messages (`fetch`, stubs, service calls): waits
/// until every write made so far by the objects in this isolate is durable. (An
/// outgoing call is not tied to one object: objects of a worker share the
/// isolate, so all of their writes go first.)
#[op2(async)]
pub async fn op_do_flush(state: Rc<RefCell<OpState>>) -> Result<(), DoError> {
    let waits: Vec<_> = state
        .borrow()
        .try_borrow::<ObjectStorages>()
        .map(|s| {
            s.0.values()
                .filter(|o| o.unflushed())
                .map(|o| o.request_flush())
                .collect()
        })
        .unwrap_or_default();
    for done in waits {
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(DoError::Failed(format!(
                    "Durable Object storage failure: {e}; the outgoing request was not sent"
                )))
            }
            Err(_) => {
                return Err(DoError::Failed(
                    "Durable Object was reset before its writes were stored; the outgoing request was not sent"
                        .into(),
                ))
            }
        }
    }
    Ok(())
}

/// -1 when no alarm is set.
#[op2(nofast)]
pub fn op_do_alarm_get(scope: &mut v8::HandleScope) -> Result<f64, DoError> {
    Ok(storage(scope)?
        .get_alarm()?
        .map(|t| t as f64)
        .unwrap_or(-1.0))
}

/// A negative time deletes the alarm.
#[op2(nofast)]
pub fn op_do_alarm_set(scope: &mut v8::HandleScope, at_ms: f64) -> Result<(), DoError> {
    let at = (at_ms >= 0.0).then_some(at_ms as u64);
    storage(scope)?.set_alarm(at)
}

#[op2]
#[serde]
pub fn op_do_sql_exec(
    scope: &mut v8::HandleScope,
    #[string] query: String,
    #[serde] bindings: Vec<SqlBinding>,
) -> Result<SqlOutput, DoError> {
    let values = bindings
        .into_iter()
        .map(
            |SqlBinding(kind, value, bytes)| match (kind, value, bytes) {
                (0, _, _) => Ok(SqlValue::Null),
                (1, Some(v), _) => v.as_i64().map(SqlValue::Integer).ok_or(()),
                (2, Some(v), _) => v.as_f64().map(SqlValue::Real).ok_or(()),
                (3, Some(serde_json::Value::String(s)), _) => Ok(SqlValue::Text(s)),
                (4, _, Some(b)) => Ok(SqlValue::Blob(b.to_vec())),
                _ => Err(()),
            },
        )
        .collect::<Result<Vec<_>, ()>>()
        .map_err(|_| DoError::Invalid("unsupported SQL binding value".into()))?;
    let result = storage(scope)?.sql_exec(&query, values)?;
    Ok(SqlOutput {
        column_names: result.columns,
        rows: result
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        SqlValue::Null => SqlOut::Null(()),
                        SqlValue::Integer(i) => SqlOut::Number(i as f64),
                        SqlValue::Real(f) => SqlOut::Number(f),
                        SqlValue::Text(t) => SqlOut::Text(t),
                        SqlValue::Blob(b) => SqlOut::Blob(ToJsBuffer::from(b)),
                    })
                    .collect()
            })
            .collect(),
        rows_read: result.rows_read,
        rows_written: result.rows_written,
    })
}

#[op2(nofast)]
pub fn op_do_sql_size(scope: &mut v8::HandleScope) -> Result<f64, DoError> {
    Ok(storage(scope)?.database_size()? as f64)
}
