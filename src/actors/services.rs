//! Service bindings from the actors' side: [`ServiceBackend`] over the published
//! deployments, so `env.AUTH.fetch()` in one worker becomes an `invoke` on
//! another worker's deployment (its dispatch table and isolates) on this node,
//! if that worker belongs to the caller's account. An `assets` binding's
//! calls are answered here from the worker's asset manifest.

use std::sync::Arc;

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::deployment::next_request_id;
use super::registry::WorkersView;
use crate::js::script::ASSETS_SERVICE_PREFIX;
use crate::js::{InvokeError, InvokeRequest, InvokeResponse, ServiceBackend};
use crate::state::assets::{AssetRequest, AssetStore, Served};

struct Services {
    view: WorkersView,
    assets: Arc<AssetStore>,
}

impl ServiceBackend for Services {
    fn invoke(
        &self,
        account: &str,
        service: &str,
        request: InvokeRequest,
    ) -> LocalBoxFuture<'static, Result<InvokeResponse, InvokeError>> {
        if let Some(worker) = service.strip_prefix(ASSETS_SERVICE_PREFIX) {
            return std::future::ready(self.assets(account, worker, request)).boxed_local();
        }
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

impl Services {
    /// `env.ASSETS.fetch(request)`: the worker's own assets, with
    /// `not_found_handling` applied and never the worker itself.
    fn assets(
        &self,
        account: &str,
        worker: &str,
        request: InvokeRequest,
    ) -> Result<InvokeResponse, InvokeError> {
        let deployment = self
            .view
            .get(worker)
            .filter(|d| d.script.account == account)
            .ok_or_else(|| {
                InvokeError::Unavailable(format!("worker '{worker}' is not deployed"))
            })?;
        let Some(assets) = &deployment.script.assets else {
            return Ok(InvokeResponse {
                status: 404,
                headers: Vec::new(),
                body: None,
                websocket: None,
                encode_manually: false,
                rpc: None,
            });
        };
        let url = deno_core::url::Url::parse(&request.url)
            .map_err(|e| InvokeError::Unavailable(format!("bad URL for the assets: {e}")))?;
        let path = crate::state::assets::decode_path(url.path());
        let req = AssetRequest {
            method: &request.method,
            path: &path,
            query: url.query(),
            headers: &request.headers,
        };
        Ok(
            match crate::state::assets::serve(&self.assets, account, assets, &req, false) {
                Served::Response(r) => r,
                Served::ToWorker => InvokeResponse {
                    status: 404,
                    headers: Vec::new(),
                    body: None,
                    websocket: None,
                    encode_manually: false,
                    rpc: None,
                },
            },
        )
    }
}

/// The node's service backend over `view`; `assets` serves `assets` bindings.
pub fn backend(view: WorkersView, assets: Arc<AssetStore>) -> Arc<dyn ServiceBackend> {
    Arc::new(Services { view, assets })
}
