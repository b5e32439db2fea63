//! `Deployment`: the active version of one worker as the data plane sees it, and
//! the dispatch of one request to one of its isolates (least in flight first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use super::isolate::Invoke;
use super::supervisor::{Acquire, DispatchTable, Grow, InFlightGuard, Slot, WorkerSupervisor};
use crate::js::durable::ObjectFuture;
use crate::js::rpc::StubRoute;
use crate::js::{InvokeError, InvokeRequest, InvokeResponse, WorkerScript};

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// A node-unique request id (also the id console lines are tagged with).
pub fn next_request_id() -> u64 {
    NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed)
}

pub struct Deployment {
    pub script: Arc<WorkerScript>,
    pub routes: Vec<String>,
    pub(crate) supervisor: Addr<WorkerSupervisor>,
    table: Arc<DispatchTable>,
    grow_at_in_flight: usize,
    max_isolates: usize,
}

impl Deployment {
    pub(crate) fn new(
        script: Arc<WorkerScript>,
        routes: Vec<String>,
        supervisor: Addr<WorkerSupervisor>,
        table: Arc<DispatchTable>,
        grow_at_in_flight: usize,
        max_isolates: usize,
    ) -> Self {
        Deployment {
            script,
            routes,
            supervisor,
            table,
            grow_at_in_flight,
            max_isolates,
        }
    }

    pub fn name(&self) -> &str {
        &self.script.name
    }

    pub fn version(&self) -> u64 {
        self.script.version
    }

    /// Isolates currently serving this version.
    pub fn isolates(&self) -> usize {
        self.table.len()
    }

    /// Runs one request on the least-loaded isolate, cold-starting one if needed.
    /// A request that an isolate refused before starting it (the isolate was
    /// stopping) is retried once on another; a started request is never re-run.
    pub async fn invoke(
        &self,
        request_id: u64,
        request: InvokeRequest,
    ) -> Result<InvokeResponse, InvokeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let slot = match self.table.least_loaded() {
                (Some(slot), n) => {
                    if slot.in_flight() >= self.grow_at_in_flight && n < self.max_isolates {
                        self.supervisor.do_send(Grow);
                    }
                    slot
                }
                (None, _) => match self.supervisor.send(Acquire).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(InvokeError::Unavailable(
                            "worker version was replaced".into(),
                        ))
                    }
                },
            };
            let _guard = slot.enter();
            let msg = Invoke {
                request_id,
                request: request.clone(),
            };
            match slot.addr.send(msg).await {
                // Never started (stopping isolate, closed mailbox): safe to retry.
                Ok(Err(InvokeError::Stopping)) | Err(_) if attempt < 2 => continue,
                // An RPC answer passed targets by reference: calls on them
                // come back to this very isolate.
                Ok(Ok(mut response)) if response.rpc.is_some() => {
                    if let Some(exports) = response.rpc.as_mut() {
                        exports.route = Some(Arc::new(IsolateRoute {
                            _in_flight: slot.enter(),
                            slot,
                        }));
                    }
                    return Ok(response);
                }
                Ok(result) => return result,
                Err(e) => return Err(InvokeError::Unavailable(e.to_string())),
            }
        }
    }
}

/// The way back to the isolate that exported RPC targets (`js::rpc`). While a
/// caller holds it the isolate counts one request in flight, so it is not
/// reaped under the stubs; the caller's request ending drops it.
struct IsolateRoute {
    slot: Slot,
    /// Held, not read: dropped with the route.
    _in_flight: InFlightGuard,
}

impl StubRoute for IsolateRoute {
    fn invoke(&self, request: InvokeRequest) -> ObjectFuture {
        let call = self.slot.addr.send(Invoke {
            request_id: next_request_id(),
            request,
        });
        Box::pin(async move {
            match call.await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Unavailable(
                    "the isolate that returned this RPC stub has stopped".into(),
                )),
            }
        })
    }

    fn notify(&self, request: InvokeRequest) {
        self.slot.addr.do_send(Invoke {
            request_id: next_request_id(),
            request,
        });
    }
}
