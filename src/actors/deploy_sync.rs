//! Deployments everywhere: a deploy, rollback or delete on any node's control
//! plane goes through the engine first (`cluster::deploys`), and every node
//! applies what the engine holds to its own registry.
//!
//! Order of a deploy: read the worker's record (and its revision) → give the
//! new version the next number after both the record's and this node's →
//! check that it starts here (nothing stored) → put the sealed bundle →
//! compare-and-set the record → make it live here. A lost compare-and-set
//! (another node deployed the same worker meanwhile) is a 409 and changes
//! nothing; an engine that cannot be reached is a 503 and changes nothing.
//! Every node, this one included, watches the records and applies the latest
//! of each worker (already live → nothing), retrying what failed every second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::Addr;
use futures::StreamExt;

use super::registry::{Activated, Apply, Check, DeleteAt, Deploy, WorkerRegistry, WorkersView};
use super::ActorError;
use crate::cluster::deploys::{self, Bundle, DeployOp, DeployRecord, MAX_BUNDLE};
use crate::cluster::engine::EngineError;
use crate::cluster::{Cluster, DEPLOYS_APPLIED, DEPLOY_PROPAGATION};
use crate::state::DeploymentStore;

/// Why a cluster deploy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// The engine cannot be reached: nothing changed.
    #[error("the cluster engine is unreachable, so deployments cannot change now: {0}")]
    Unavailable(String),
    /// Another node changed the worker meanwhile: nothing changed here.
    #[error("worker '{0}' was changed on another node meanwhile; try again")]
    Conflict(String),
}

impl From<EngineError> for SyncError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Conflict => SyncError::Conflict(String::new()),
            EngineError::Unreachable(m) => SyncError::Unavailable(m),
        }
    }
}

fn flatten<T>(r: Result<Result<T, EngineError>, String>) -> Result<T, SyncError> {
    r.map_err(SyncError::Unavailable)?.map_err(SyncError::from)
}

fn mailbox(e: actix::MailboxError) -> SyncError {
    SyncError::Actor(ActorError::Mailbox(e.to_string()))
}

/// The cluster-wide deploy path the control plane takes in cluster mode.
#[derive(Clone)]
pub struct ClusterDeploys {
    pub cluster: Cluster,
    pub registry: Addr<WorkerRegistry>,
    pub store: Arc<DeploymentStore>,
}

impl ClusterDeploys {
    async fn record(&self, name: &str) -> Result<Option<(DeployRecord, u64)>, SyncError> {
        let buckets = self.cluster.buckets()?;
        let n = name.to_owned();
        let found = flatten(
            self.cluster
                .run(async move { buckets.deployment(&n).await })
                .await,
        )?;
        match found {
            None => Ok(None),
            Some((bytes, rev)) => Ok(Some((
                DeployRecord::parse(&bytes).map_err(SyncError::Unavailable)?,
                rev,
            ))),
        }
    }

    /// The workers of `account` that are deployed in the cluster.
    pub async fn workers_of(&self, account: &str) -> Result<Vec<String>, SyncError> {
        let mut out = Vec::new();
        for name in self.cluster.deployed_workers().await? {
            if let Some((r, _)) = self.record(&name).await? {
                if r.op == DeployOp::Deploy && r.account == account {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    /// Puts the bundle, then the record (compare-and-set on `expected`).
    async fn publish(
        &self,
        worker: &str,
        bundle: Option<&Bundle>,
        mut record: DeployRecord,
        expected: Option<u64>,
    ) -> Result<u64, SyncError> {
        let buckets = self.cluster.buckets()?;
        let worker = worker.to_owned();
        let sealed = match bundle {
            Some(b) => {
                Some(deploys::seal(self.cluster.bundle_key(), b).map_err(SyncError::Unavailable)?)
            }
            None => None,
        };
        if let Some((digest, _)) = &sealed {
            record.bundle = digest.clone();
        }
        let value = record.to_bytes();
        let w = worker.clone();
        flatten(
            self.cluster
                .run(async move {
                    if let Some((digest, bytes)) = sealed {
                        buckets.put_bundle(&digest, bytes).await?;
                    }
                    buckets.set_deployment(&w, value, expected).await
                })
                .await,
        )
        .map_err(|e| match e {
            SyncError::Conflict(_) => SyncError::Conflict(worker),
            other => other,
        })
    }

    pub async fn deploy(&self, msg: Deploy) -> Result<Activated, SyncError> {
        let Deploy {
            mut script,
            routes,
            hosts,
        } = msg;
        let name = script.name.clone();
        let current = self.record(&name).await?;
        let local_next = self.store.next_version(&name).map_err(ActorError::from)?;
        let version = current
            .as_ref()
            .map(|(r, _)| r.next_version())
            .unwrap_or(1)
            .max(local_next);
        let storage =
            match &current {
                Some((r, _)) if r.op == DeployOp::Deploy => {
                    if r.account != script.account {
                        return Err(ActorError::Store(crate::state::StateError::Forbidden(
                            format!("the worker name '{name}' is taken; choose another"),
                        ))
                        .into());
                    }
                    r.storage.clone()
                }
                Some((r, _)) => {
                    let s = self
                        .store
                        .storage_for(&name, &script.account)
                        .map_err(ActorError::from)?;
                    if s == r.storage && !r.keep_storage {
                        crate::state::names::new_storage_id()
                    } else {
                        s
                    }
                }
                None => self
                    .store
                    .storage_for(&name, &script.account)
                    .map_err(ActorError::from)?,
            };
        script.version = version;
        script.storage = storage.clone();
        // Set once, where the deploy is made: every PoP shows the same time.
        script.deployed_at_ms = super::durable_object::epoch_ms();
        self.registry
            .send(Check {
                script: script.clone(),
                routes: routes.clone(),
                hosts: hosts.clone(),
            })
            .await
            .map_err(mailbox)??;
        // Then cluster-wide: another PoP's claims may not have reached this
        // PoP's store yet (`cluster::claims`).
        let namespaces = crate::state::deployments::kv_namespaces(&script);
        self.cluster
            .claim(&script.account, &hosts, &namespaces)
            .await
            .map_err(|e| match e {
                crate::cluster::claims::ClaimError::Forbidden(m) => {
                    SyncError::Actor(ActorError::Store(crate::state::StateError::Forbidden(m)))
                }
                crate::cluster::claims::ClaimError::Unavailable(m) => SyncError::Unavailable(m),
            })?;
        let record = DeployRecord {
            op: DeployOp::Deploy,
            version,
            storage,
            account: script.account.clone(),
            bundle: String::new(),
            keep_storage: false,
            origin: self.cluster.node_id().to_owned(),
            max_version: version,
        };
        let bundle = Bundle {
            script,
            routes,
            hosts,
        };
        let revision = self
            .publish(&name, Some(&bundle), record, current.map(|(_, rev)| rev))
            .await?;
        apply(&self.registry, bundle, revision).await
    }

    /// Makes the version before the live one live again, everywhere.
    pub async fn rollback(&self, name: &str) -> Result<Activated, SyncError> {
        let (current, rev) = match self.record(name).await? {
            Some((r, rev)) if r.op == DeployOp::Deploy => (r, rev),
            _ => return Err(ActorError::NotFound(format!("worker '{name}'")).into()),
        };
        let previous = self
            .store
            .previous_version(name, current.version)
            .map_err(ActorError::from)?
            .ok_or_else(|| ActorError::NoPreviousVersion(name.to_owned()))?;
        let stored = self
            .store
            .version(name, previous)
            .map_err(ActorError::from)?
            .ok_or_else(|| ActorError::NotFound(format!("version {previous} of '{name}'")))?;
        let hosts = hosts_of(&stored.routes);
        let record = DeployRecord {
            op: DeployOp::Deploy,
            version: previous,
            storage: current.storage.clone(),
            account: current.account.clone(),
            bundle: String::new(),
            keep_storage: false,
            origin: self.cluster.node_id().to_owned(),
            max_version: current.next_version() - 1,
        };
        let bundle = Bundle {
            script: stored.script,
            routes: stored.routes,
            hosts,
        };
        let revision = self.publish(name, Some(&bundle), record, Some(rev)).await?;
        apply(&self.registry, bundle, revision).await
    }

    pub async fn delete(&self, name: &str, keep_storage: bool) -> Result<(), SyncError> {
        let (current, rev) = match self.record(name).await? {
            Some((r, rev)) if r.op == DeployOp::Deploy => (r, rev),
            _ => return Err(ActorError::NotFound(format!("worker '{name}'")).into()),
        };
        let record = DeployRecord {
            op: DeployOp::Delete,
            version: current.version,
            storage: current.storage.clone(),
            account: current.account.clone(),
            bundle: String::new(),
            keep_storage,
            origin: self.cluster.node_id().to_owned(),
            max_version: current.next_version() - 1,
        };
        let revision = self.publish(name, None, record, Some(rev)).await?;
        match self
            .registry
            .send(DeleteAt {
                name: name.to_owned(),
                keep_storage,
                revision,
            })
            .await
            .map_err(mailbox)?
        {
            Ok(()) | Err(ActorError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn hosts_of(routes: &[String]) -> Vec<String> {
    routes
        .iter()
        .filter_map(|r| crate::state::hosts::HostPattern::parse_route(r).ok())
        .map(|(h, _)| h.canonical())
        .collect()
}

async fn apply(
    registry: &Addr<WorkerRegistry>,
    bundle: Bundle,
    revision: u64,
) -> Result<Activated, SyncError> {
    Ok(registry
        .send(Apply {
            script: bundle.script,
            routes: bundle.routes,
            hosts: bundle.hosts,
            revision,
        })
        .await
        .map_err(mailbox)??)
}

/// Applies the engine's records on this node for as long as the node runs.
pub fn spawn_watcher(
    cluster: Cluster,
    registry: Addr<WorkerRegistry>,
    view: WorkersView,
    store: Arc<DeploymentStore>,
) {
    actix::spawn(async move {
        let mut pending: HashMap<String, (DeployRecord, u64, SystemTime)> = HashMap::new();
        loop {
            let watch = match cluster.buckets() {
                Ok(b) => {
                    cluster
                        .run(async move { b.watch_deployments().await })
                        .await
                }
                Err(e) => Ok(Err(e)),
            };
            let mut changes = match watch {
                Ok(Ok(c)) => c,
                _ => {
                    retry(&cluster, &registry, &view, &store, &mut pending).await;
                    actix::clock::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // A watch can stall without ending when the core server holding
            // its consumer goes away: it is made again every 30 s (applying
            // is idempotent; what is live already is skipped).
            let made = std::time::Instant::now();
            while made.elapsed() < Duration::from_secs(30) {
                let next = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
                match next {
                    Ok(Some(change)) => {
                        let Some(name) = change.key.strip_prefix("w.") else {
                            continue;
                        };
                        let Some(value) = change.value else {
                            continue;
                        };
                        match DeployRecord::parse(&value) {
                            Ok(record) => {
                                pending.insert(
                                    name.to_owned(),
                                    (record, change.revision, change.created),
                                );
                            }
                            Err(e) => {
                                tracing::error!(worker = name, error = %e, "ignoring a deployment record")
                            }
                        }
                        retry(&cluster, &registry, &view, &store, &mut pending).await;
                    }
                    Ok(None) => break,
                    Err(_) => retry(&cluster, &registry, &view, &store, &mut pending).await,
                }
            }
        }
    });
}

/// Applies every pending record; those that fail stay pending.
async fn retry(
    cluster: &Cluster,
    registry: &Addr<WorkerRegistry>,
    view: &WorkersView,
    store: &Arc<DeploymentStore>,
    pending: &mut HashMap<String, (DeployRecord, u64, SystemTime)>,
) {
    let names: Vec<String> = pending.keys().cloned().collect();
    for name in names {
        let Some((record, revision, created)) = pending.get(&name).cloned() else {
            continue;
        };
        match apply_record(cluster, registry, view, store, &name, &record, revision).await {
            Ok(applied) => {
                pending.remove(&name);
                if applied {
                    metrics::counter!(DEPLOYS_APPLIED).increment(1);
                    if let Ok(age) = SystemTime::now().duration_since(created) {
                        metrics::histogram!(DEPLOY_PROPAGATION).record(age.as_secs_f64());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(worker = %name, version = record.version, error = %e, "cannot apply a deployment yet; retrying");
            }
        }
    }
}

/// `Ok(true)` when something changed here.
async fn apply_record(
    cluster: &Cluster,
    registry: &Addr<WorkerRegistry>,
    view: &WorkersView,
    store: &Arc<DeploymentStore>,
    name: &str,
    record: &DeployRecord,
    revision: u64,
) -> Result<bool, SyncError> {
    match record.op {
        DeployOp::Deploy => {
            if view.get(name).is_some_and(|d| {
                d.version() == record.version && d.script.storage == record.storage
            }) {
                return Ok(false);
            }
            let buckets = cluster.buckets()?;
            let digest = record.bundle.clone();
            let sealed = flatten(
                cluster
                    .run(async move { buckets.bundle(&digest, MAX_BUNDLE).await })
                    .await,
            )?;
            let mut bundle = deploys::open(cluster.bundle_key(), &record.bundle, &sealed)
                .map_err(SyncError::Unavailable)?;
            if bundle.script.name != name {
                return Err(SyncError::Unavailable(format!(
                    "bundle {} is for another worker",
                    record.bundle
                )));
            }
            bundle.script.version = record.version;
            bundle.script.storage = record.storage.clone();
            bundle.script.account = record.account.clone();
            // Its static assets are here before the version goes live here.
            if let Some(assets) = &bundle.script.assets {
                let hashes = assets.files.values().map(|f| f.hash.clone()).collect();
                cluster
                    .fetch_assets(&record.account, hashes)
                    .await
                    .map_err(|e| SyncError::Unavailable(format!("cannot fetch the assets: {e}")))?;
            }
            let activated = apply(registry, bundle, revision).await?;
            tracing::info!(worker = name, version = activated.version, origin = %record.origin, "deployment applied from the cluster");
            Ok(true)
        }
        DeployOp::Delete => {
            let here = store
                .worker(name)
                .map_err(ActorError::from)?
                .is_some_and(|w| w.storage == record.storage);
            if !here {
                return Ok(false);
            }
            match registry
                .send(DeleteAt {
                    name: name.to_owned(),
                    keep_storage: record.keep_storage,
                    revision,
                })
                .await
                .map_err(mailbox)?
            {
                Ok(()) | Err(ActorError::NotFound(_)) => {
                    tracing::info!(worker = name, origin = %record.origin, "delete applied from the cluster");
                    Ok(true)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}
