//! Service bindings: `env.NAME.fetch(request)` and RPC (`env.NAME.method(args)`)
//! to another worker on the same node, without a network hop.
//!
//! The engine defines the [`ServiceBackend`] interface; the actors layer
//! implements it over the published deployments. A bound isolate may call only
//! the services its worker was deployed with ([`ServiceAccess`]). Chains of
//! worker-to-worker calls are bounded ([`MAX_DEPTH`]) so a worker that calls
//! itself cannot recurse without end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use deno_core::{op2, v8, JsBuffer, ToJsBuffer};
use futures::future::LocalBoxFuture;

use super::body::Body;
use super::error::InvokeError;
use super::script::{InvokeRequest, InvokeResponse};

pub use super::context::MAX_DEPTH;

/// Runs a request on another worker of this node.
pub trait ServiceBackend: Send + Sync {
    /// `account` is the caller's: a service of another account is not there
    /// for it.
    fn invoke(
        &self,
        account: &str,
        service: &str,
        request: InvokeRequest,
    ) -> LocalBoxFuture<'static, Result<InvokeResponse, InvokeError>>;
}

/// Filled in by the node once its actors run (isolates are created before).
pub type ServiceSlot = super::late_bound::LateBound<dyn ServiceBackend>;

/// A bound isolate's service bindings: binding name → (worker name, the
/// named entrypoint it calls).
pub struct ServiceAccess {
    pub slot: ServiceSlot,
    /// The calling worker's account.
    pub account: String,
    /// Binding → (worker, entrypoint, props as JSON).
    pub services: HashMap<String, (String, Option<String>, Option<String>)>,
}

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum ServiceError {
    #[class(type)]
    #[error("{0}")]
    Invalid(String),
    #[class(generic)]
    #[error("{0}")]
    Failed(String),
}

/// The backend, account, worker and entrypoint a call from the current
/// request through `binding` goes to, with its depth (the caller's plus
/// one), counted as a subrequest.
type Target = (
    Arc<dyn ServiceBackend>,
    String,
    String,
    Option<String>,
    Option<String>,
    u8,
);

fn target(scope: &mut v8::HandleScope, binding: &str, api: &str) -> Result<Target, ServiceError> {
    let depth =
        super::context::outgoing(scope, api).map_err(|e| ServiceError::Failed(e.to_string()))?;
    let state = deno_core::JsRuntime::op_state_from(scope);
    let state = state.borrow();
    let access = state
        .try_borrow::<ServiceAccess>()
        .ok_or_else(|| ServiceError::Invalid("service bindings are not available here".into()))?;
    let (service, entrypoint, props) = access
        .services
        .get(binding)
        .ok_or_else(|| ServiceError::Invalid(format!("'{binding}' is not a service binding")))?;
    let backend = access
        .slot
        .get()
        .ok_or_else(|| ServiceError::Failed("service bindings are not available yet".into()))?;
    Ok((
        backend,
        access.account.clone(),
        service.clone(),
        entrypoint.clone(),
        props.clone(),
        depth,
    ))
}

fn failed(service: &str, e: InvokeError) -> ServiceError {
    match e {
        // The callee's exception, as Workers passes it on: its first line.
        InvokeError::Exception(stack) => {
            ServiceError::Failed(super::error::remote_exception(&stack))
        }
        InvokeError::Unavailable(m) if m.contains("not deployed") => ServiceError::Failed(m),
        other => ServiceError::Failed(format!("service '{service}' failed: {other}")),
    }
}

/// The response of a service `fetch()`: status, flat headers, and the body as
/// bytes or as a stream resource.
type FetchResult = (
    u16,
    Vec<String>,
    Option<ToJsBuffer>,
    Option<u32>,
    Option<u32>,
);

#[op2(async)]
#[serde]
pub fn op_service_fetch(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] method: String,
    #[string] url: String,
    #[serde] headers: Vec<String>,
    #[buffer] body: Option<JsBuffer>,
) -> impl Future<Output = Result<FetchResult, ServiceError>> {
    let target = target(scope, &binding, "service binding fetch()");
    let owner = super::context::current(scope);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let body = body.map(|b| Body::Bytes(bytes::Bytes::copy_from_slice(&b)));
    async move {
        let (backend, account, service, entrypoint, props, depth) = target?;
        if super::script::mimics_event(&method, &url) {
            return Err(ServiceError::Invalid(format!(
                "Fetch API cannot load: {url}"
            )));
        }
        let request = InvokeRequest {
            entrypoint,
            props,
            cf: None,
            method,
            url,
            headers: super::script::headers_from_flat(&headers),
            body,
            depth,
            cancel: Default::default(),
        };
        let response = backend
            .invoke(&account, &service, request)
            .await
            .map_err(|e| failed(&service, e))?;
        let headers = super::script::headers_to_flat(response.headers);
        let (bytes, rid) = super::body::into_js(&state, response.body);
        let socket = super::websocket::into_js(&state, response.websocket, owner)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        Ok((response.status, headers, bytes, rid, socket))
    }
}

#[op2(async)]
#[serde]
pub fn op_service_rpc(
    scope: &mut v8::HandleScope,
    #[string] binding: String,
    #[string] method: String,
    #[buffer] args: JsBuffer,
) -> impl Future<Output = Result<super::rpc::Answer, ServiceError>> {
    let target = target(scope, &binding, "service binding RPC");
    let caller = super::context::current(scope);
    let contexts = super::context::contexts(&deno_core::JsRuntime::op_state_from(scope).borrow());
    let args = bytes::Bytes::copy_from_slice(&args);
    async move {
        let (backend, account, service, entrypoint, props, depth) = target?;
        let request = InvokeRequest {
            entrypoint,
            props,
            cf: None,
            method: "RPC".into(),
            url: format!("rpc:{method}"),
            headers: Vec::new(),
            body: Some(Body::Bytes(args)),
            depth,
            cancel: Default::default(),
        };
        let response = backend
            .invoke(&account, &service, request)
            .await
            .map_err(|e| failed(&service, e))?;
        // Stubs reach the isolate that answered (the route comes with it).
        super::rpc::answer(contexts.as_ref(), caller, depth, response, None)
            .map_err(ServiceError::Failed)
    }
}
