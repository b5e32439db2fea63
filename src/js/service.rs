//! Service bindings: `env.NAME.fetch(request)` and RPC (`env.NAME.method(args)`)
//! to another worker on the same node, without a network hop.
//!
//! The engine defines the [`ServiceBackend`] interface; the actors layer
//! implements it over the published deployments. A bound isolate may call only
//! the services its worker was deployed with ([`ServiceAccess`]). Chains of
//! worker-to-worker calls are bounded ([`MAX_DEPTH`]) so a worker that calls
//! itself cannot recurse without end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use deno_core::{op2, JsBuffer, OpState, ToJsBuffer};
use futures::future::LocalBoxFuture;

use super::body::Body;
use super::error::InvokeError;
use super::script::{InvokeRequest, InvokeResponse};

/// Worker-to-worker calls one client request may lead to, in a chain.
pub const MAX_DEPTH: u8 = 16;

/// Runs a request on another worker of this node.
pub trait ServiceBackend: Send + Sync {
    fn invoke(
        &self,
        service: &str,
        request: InvokeRequest,
    ) -> LocalBoxFuture<'static, Result<InvokeResponse, InvokeError>>;
}

/// Filled in by the node once its actors run (isolates are created before).
pub type ServiceSlot = super::late_bound::LateBound<dyn ServiceBackend>;

/// A bound isolate's service bindings: binding name → worker name.
pub struct ServiceAccess {
    pub slot: ServiceSlot,
    pub services: HashMap<String, String>,
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

fn target(
    state: &Rc<RefCell<OpState>>,
    binding: &str,
    depth: u8,
) -> Result<(Arc<dyn ServiceBackend>, String), ServiceError> {
    if depth > MAX_DEPTH {
        return Err(ServiceError::Failed(format!(
            "Subrequest depth limit exceeded: more than {MAX_DEPTH} worker-to-worker calls in a chain"
        )));
    }
    let state = state.borrow();
    let access = state
        .try_borrow::<ServiceAccess>()
        .ok_or_else(|| ServiceError::Invalid("service bindings are not available here".into()))?;
    let service = access
        .services
        .get(binding)
        .ok_or_else(|| ServiceError::Invalid(format!("'{binding}' is not a service binding")))?;
    let backend = access
        .slot
        .get()
        .ok_or_else(|| ServiceError::Failed("service bindings are not available yet".into()))?;
    Ok((backend, service.clone()))
}

fn failed(service: &str, e: InvokeError) -> ServiceError {
    match e {
        // The callee's exception, as Workers passes it on: its first line.
        InvokeError::Exception(stack) => {
            ServiceError::Failed(stack.lines().next().unwrap_or("Error").to_owned())
        }
        InvokeError::Unavailable(m) if m.contains("not deployed") => ServiceError::Failed(m),
        other => ServiceError::Failed(format!("service '{service}' failed: {other}")),
    }
}

/// The response of a service `fetch()`: status, flat headers, and the body as
/// bytes or as a stream resource.
type FetchResult = (u16, Vec<String>, Option<ToJsBuffer>, Option<u32>);

#[allow(clippy::too_many_arguments)]
#[op2(async)]
#[serde]
pub async fn op_service_fetch(
    state: Rc<RefCell<OpState>>,
    #[string] binding: String,
    #[string] method: String,
    #[string] url: String,
    #[serde] headers: Vec<String>,
    #[buffer] body: Option<JsBuffer>,
    #[smi] depth: u8,
) -> Result<FetchResult, ServiceError> {
    let (backend, service) = target(&state, &binding, depth)?;
    let request = InvokeRequest {
        method,
        url,
        headers: headers
            .chunks(2)
            .filter(|p| p.len() == 2)
            .map(|p| (p[0].clone(), p[1].as_bytes().to_vec()))
            .collect(),
        body: body.map(|b| Body::Bytes(bytes::Bytes::copy_from_slice(&b))),
        depth,
    };
    let response = backend
        .invoke(&service, request)
        .await
        .map_err(|e| failed(&service, e))?;
    let headers = response
        .headers
        .into_iter()
        .flat_map(|(k, v)| {
            [
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ]
        })
        .collect();
    let (bytes, rid) = super::body::into_js(&state, response.body);
    Ok((response.status, headers, bytes, rid))
}

#[op2(async)]
#[buffer]
pub async fn op_service_rpc(
    state: Rc<RefCell<OpState>>,
    #[string] binding: String,
    #[string] method: String,
    #[buffer] args: JsBuffer,
    #[smi] depth: u8,
) -> Result<Vec<u8>, ServiceError> {
    let (backend, service) = target(&state, &binding, depth)?;
    let request = InvokeRequest {
        method: "RPC".into(),
        url: format!("rpc:{method}"),
        headers: Vec::new(),
        body: Some(Body::Bytes(bytes::Bytes::copy_from_slice(&args))),
        depth,
    };
    let response = backend
        .invoke(&service, request)
        .await
        .map_err(|e| failed(&service, e))?;
    Ok(response
        .body
        .and_then(|b| b.as_bytes().map(|b| b.to_vec()))
        .unwrap_or_default())
}
