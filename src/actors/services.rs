//! Service bindings from the actors' side: [`ServiceBackend`] over the published
//! deployments, so `env.AUTH.fetch()` in one worker becomes an `invoke` on
//! another worker's deployment (its dispatch table and isolates) on this node,
//! if that worker belongs to the caller's account.

use std::sync::Arc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::deployment::next_request_id;
use super::registry::WorkersView;
use crate::js::{InvokeError, InvokeRequest, InvokeResponse, ServiceBackend};

struct Services {
    view: WorkersView,
}

impl ServiceBackend for Services {
    fn invoke(
        &self,
        account: &str,
        service: &str,
        request: InvokeRequest,
    ) -> LocalBoxFuture<'static, Result<InvokeResponse, InvokeError>> {
        // A worker of another account is not there for the caller at all.
        let deployment = self
            .view
            .get(service)
            .filter(|d| d.script.account == account);
        let service = service.to_owned();
        async move {
            let Some(deployment) = deployment else {
                return Err(InvokeError::Unavailable(format!(
                    "service '{service}' is not deployed on this node"
                )));
            };
            deployment.invoke(next_request_id(), request).await
        }
        .boxed_local()
    }
}

/// The node's service backend over `view`.
pub fn backend(view: WorkersView) -> Arc<dyn ServiceBackend> {
    Arc::new(Services { view })
}
