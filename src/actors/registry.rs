//! `WorkerRegistry`: which version of which worker is live, and every change to it.
//!
//! Deploy, rollback, delete and restore are messages to this one actor and run one
//! at a time (`ctx.wait`), so two deploys of a worker can never interleave. A new
//! version is *validated by starting it*: its supervisor cold-starts the first
//! isolate, and only when that succeeds is the version stored, made active and
//! published; the old version's supervisor then drains. A version that fails to
//! start is never stored, and the old one keeps serving.
//!
//! The data plane reads the published [`WorkersView`] (a read lock and an `Arc`
//! clone) and never waits on this actor.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use parking_lot::RwLock;

use super::deployment::Deployment;
use super::directory::WorkerGone;
use super::error::ActorError;
use super::pool::IsolateThreads;
use super::supervisor::{Acquire, Drain, WorkerSupervisor};
use crate::config::IsolateConfig;
use crate::js::{EngineError, WorkerScript};
use crate::state::DeploymentStore;

/// The live deployments, as published to the data plane.
#[derive(Default)]
pub struct Published {
    /// Bumped on every change, so readers can cache what they derive (routes).
    pub generation: u64,
    pub workers: HashMap<String, Arc<Deployment>>,
}

/// A cheap, shareable read handle on the published deployments.
#[derive(Clone, Default)]
pub struct WorkersView {
    inner: Arc<RwLock<Arc<Published>>>,
}

impl WorkersView {
    pub fn current(&self) -> Arc<Published> {
        self.inner.read().clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.inner.read().workers.get(name).cloned()
    }

    fn publish(&self, workers: HashMap<String, Arc<Deployment>>) {
        let mut guard = self.inner.write();
        let generation = guard.generation + 1;
        *guard = Arc::new(Published {
            generation,
            workers,
        });
    }
}

/// What a successful deploy or rollback made live.
#[derive(Debug, Clone, PartialEq)]
pub struct Activated {
    pub name: String,
    pub version: u64,
    pub routes: Vec<String>,
}

/// Upload a new version (its `version` field is assigned here) and make it live.
#[derive(Message)]
#[rtype(result = "Result<Activated, ActorError>")]
pub struct Deploy {
    /// Its `account` is set; its `version` and `storage` are assigned here.
    pub script: WorkerScript,
    pub routes: Vec<String>,
    /// The routes' host patterns (canonical), claimed for the script's account
    /// in the same transaction that stores the version.
    pub hosts: Vec<String>,
}

/// Checks that a script starts, without making it live or storing it (a
/// cluster deploy validates before it records the version in the engine).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Check {
    pub script: WorkerScript,
    pub routes: Vec<String>,
    pub hosts: Vec<String>,
}

/// Makes live a version the cluster decided (its `version` and `storage` are
/// set): already live → nothing; stored here → activated; else stored and made
/// live. A local worker of the same name with another storage id was deleted
/// elsewhere and is forgotten first.
#[derive(Message)]
#[rtype(result = "Result<Activated, ActorError>")]
pub struct Apply {
    pub script: WorkerScript,
    pub routes: Vec<String>,
    pub hosts: Vec<String>,
    /// The engine revision of the record this comes from: an older one than
    /// already applied for the worker is ignored (a deploy's own apply can
    /// arrive after the watcher applied a newer record).
    pub revision: u64,
}

/// A delete decided by the cluster, at an engine revision (see [`Apply`]).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct DeleteAt {
    pub name: String,
    pub keep_storage: bool,
    pub revision: u64,
}

/// Make the previous stored version live again.
#[derive(Message)]
#[rtype(result = "Result<Activated, ActorError>")]
pub struct Rollback {
    pub name: String,
}

/// Stop serving a worker and forget all its versions; its Durable Objects stop
/// at once and, unless `keep_storage`, their storage and alarms and its cached
/// responses are removed for good.
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Delete {
    pub name: String,
    pub keep_storage: bool,
}

/// Remove an account and everything it owns (workers as with [`Delete`]).
#[derive(Message)]
#[rtype(result = "Result<crate::state::AccountRemoval, ActorError>")]
pub struct DeleteAccount {
    pub id: String,
}

/// Where the registry sends what a deleted worker leaves behind.
#[derive(Clone)]
pub struct Cleanup {
    pub objects: Recipient<WorkerGone>,
    pub cache: Option<Arc<dyn crate::js::CacheBackend>>,
}

/// Start every stored active version (node start-up).
#[derive(Message)]
#[rtype(result = "Vec<(String, ActorError)>")]
pub struct Restore;

pub struct WorkerRegistry {
    store: Arc<DeploymentStore>,
    threads: IsolateThreads,
    config: IsolateConfig,
    view: WorkersView,
    live: HashMap<String, Arc<Deployment>>,
    cleanup: Option<Cleanup>,
    /// In a cluster: the newest engine revision applied per worker.
    applied: HashMap<String, u64>,
}

impl WorkerRegistry {
    pub fn new(
        store: Arc<DeploymentStore>,
        threads: IsolateThreads,
        config: IsolateConfig,
    ) -> Self {
        WorkerRegistry {
            store,
            threads,
            config,
            view: WorkersView::default(),
            live: HashMap::new(),
            cleanup: None,
            applied: HashMap::new(),
        }
    }

    /// Where deletes send the objects and caches of the deleted worker.
    pub fn with_cleanup(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// Records `revision` for `name`; `false` if a newer one was applied.
    fn newest(&mut self, name: &str, revision: u64) -> bool {
        let seen = self.applied.entry(name.to_owned()).or_insert(0);
        if *seen > revision {
            return false;
        }
        *seen = revision;
        true
    }

    /// Stops serving `name` (if live) and cleans up after it.
    fn forget(&mut self, name: &str, storage: &str, keep_storage: bool) {
        if let Some(old) = self.live.remove(name) {
            old.supervisor.do_send(Drain);
            self.view.publish(self.live.clone());
        }
        if let Some(c) = &self.cleanup {
            c.objects.do_send(WorkerGone {
                storage: storage.to_owned(),
                keep: keep_storage,
            });
            if !keep_storage {
                if let Some(cache) = &c.cache {
                    cache.purge(storage);
                }
            }
        }
    }

    pub fn view(&self) -> WorkersView {
        self.view.clone()
    }

    fn route_conflict(&self, name: &str, routes: &[String]) -> Option<(String, String)> {
        for (other, d) in &self.live {
            if other == name {
                continue;
            }
            for r in routes {
                if d.routes.iter().any(|o| o == r) {
                    return Some((r.clone(), other.clone()));
                }
            }
        }
        None
    }

    /// Starts a supervisor for `script` and cold-starts its first isolate.
    fn start_version(
        &self,
        script: Arc<WorkerScript>,
        routes: Vec<String>,
    ) -> impl std::future::Future<Output = Result<Deployment, ActorError>> + 'static {
        let supervisor =
            WorkerSupervisor::new(script.clone(), self.threads.clone(), self.config.clone());
        let table = supervisor.table();
        let addr = supervisor.start();
        let grow_at = self.config.grow_at_in_flight;
        let max = self.config.max_isolates;
        async move {
            match addr.send(Acquire).await {
                Ok(Ok(_)) => Ok(Deployment::new(script, routes, addr, table, grow_at, max)),
                Ok(Err(e)) => {
                    addr.do_send(Drain);
                    Err(match e {
                        EngineError::Script(m) => ActorError::Script(m),
                        EngineError::CpuLimit => ActorError::Script(
                            "the worker's startup exceeded its CPU time limit".into(),
                        ),
                        EngineError::MemoryLimit => ActorError::Script(
                            "the worker's startup exceeded its memory limit".into(),
                        ),
                        other => ActorError::Engine(other),
                    })
                }
                Err(e) => Err(ActorError::Mailbox(e.to_string())),
            }
        }
    }

    /// Once `starting` has started its first isolate, records the change with
    /// `persist` and makes the version live; if either fails, the new version is
    /// drained and nothing changes. Holds the mailbox meanwhile (`ctx.wait`), so
    /// deploys, rollbacks and deletes never interleave.
    fn go_live_when_started(
        &mut self,
        starting: impl std::future::Future<Output = Result<Deployment, ActorError>> + 'static,
        persist: impl FnOnce(&DeploymentStore) -> Result<(), crate::state::StateError> + 'static,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Activated, ActorError>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        ctx.wait(starting.into_actor(self).map(move |started, act, _ctx| {
            let result = started.and_then(|deployment| {
                if let Err(e) = persist(&act.store) {
                    deployment.supervisor.do_send(Drain);
                    return Err(ActorError::from(e));
                }
                Ok(act.go_live(deployment))
            });
            let _ = tx.send(result);
        }));
        Box::pin(fut::wrap_future(async move {
            rx.await
                .unwrap_or_else(|_| Err(ActorError::Mailbox("registry stopped".into())))
        }))
    }

    /// Makes `deployment` live, replacing (and draining) the previous version.
    fn go_live(&mut self, deployment: Deployment) -> Activated {
        let activated = Activated {
            name: deployment.name().to_owned(),
            version: deployment.version(),
            routes: deployment.routes.clone(),
        };
        tracing::info!(worker = %activated.name, version = activated.version, "version live");
        if let Some(old) = self
            .live
            .insert(activated.name.clone(), Arc::new(deployment))
        {
            old.supervisor.do_send(Drain);
        }
        self.view.publish(self.live.clone());
        activated
    }
}

impl Actor for WorkerRegistry {
    type Context = Context<Self>;
}

impl Handler<Deploy> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Result<Activated, ActorError>>;

    fn handle(&mut self, msg: Deploy, ctx: &mut Self::Context) -> Self::Result {
        let Deploy {
            mut script,
            routes,
            hosts,
        } = msg;
        if let Some((route, other)) = self.route_conflict(&script.name, &routes) {
            return Box::pin(fut::ready(Err(ActorError::RouteConflict { route, other })));
        }
        let assigned = self
            .store
            .storage_for(&script.name, &script.account)
            .and_then(|storage| Ok((storage, self.store.next_version(&script.name)?)));
        match assigned {
            Ok((storage, version)) => {
                script.storage = storage;
                script.version = version;
                script.deployed_at_ms = super::durable_object::epoch_ms();
            }
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        }
        let script = Arc::new(script);
        let starting = self.start_version(script.clone(), routes.clone());
        self.go_live_when_started(
            starting,
            move |store| store.insert_active(&script, &routes, &hosts).map(|_| ()),
            ctx,
        )
    }
}

impl Handler<Check> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: Check, _: &mut Self::Context) -> Self::Result {
        if let Some((route, other)) = self.route_conflict(&msg.script.name, &msg.routes) {
            return Box::pin(fut::ready(Err(ActorError::RouteConflict { route, other })));
        }
        if let Err(e) = self.store.check_claims(&msg.script, &msg.hosts) {
            return Box::pin(fut::ready(Err(e.into())));
        }
        let starting = self.start_version(Arc::new(msg.script), msg.routes);
        Box::pin(fut::wrap_future(async move {
            let started = starting.await?;
            started.supervisor.do_send(Drain);
            Ok(())
        }))
    }
}

impl Handler<Apply> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Result<Activated, ActorError>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) -> Self::Result {
        let Apply {
            script,
            routes,
            hosts,
            revision,
        } = msg;
        let name = script.name.clone();
        if !self.newest(&name, revision) {
            tracing::info!(worker = %name, revision, "a newer deployment was applied meanwhile");
            return Box::pin(fut::ready(Ok(Activated {
                name,
                version: script.version,
                routes,
            })));
        }
        if let Some(live) = self.live.get(&name) {
            if live.version() == script.version && live.script.storage == script.storage {
                return Box::pin(fut::ready(Ok(Activated {
                    name,
                    version: script.version,
                    routes: live.routes.clone(),
                })));
            }
        }
        let prepare = |act: &mut Self| -> Result<Option<crate::state::StoredVersion>, ActorError> {
            if let Some(record) = act.store.worker(&name)? {
                if record.storage != script.storage {
                    if let Some(deleted) = act.store.delete(&name, false)? {
                        act.forget(&name, &deleted.storage, deleted.kept);
                    }
                }
            }
            Ok(act
                .store
                .version(&name, script.version)?
                .filter(|v| v.script.storage == script.storage))
        };
        let stored = match prepare(self) {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        if let Some((route, other)) = self.route_conflict(&name, &routes) {
            return Box::pin(fut::ready(Err(ActorError::RouteConflict { route, other })));
        }
        match stored {
            Some(stored) => {
                let starting =
                    self.start_version(Arc::new(stored.script.clone()), stored.routes.clone());
                self.go_live_when_started(
                    starting,
                    move |store| store.activate(&stored.script.name, stored.script.version),
                    ctx,
                )
            }
            None => {
                let script = Arc::new(script);
                let starting = self.start_version(script.clone(), routes.clone());
                self.go_live_when_started(
                    starting,
                    move |store| store.insert_active(&script, &routes, &hosts).map(|_| ()),
                    ctx,
                )
            }
        }
    }
}

impl Handler<Rollback> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Result<Activated, ActorError>>;

    fn handle(&mut self, msg: Rollback, ctx: &mut Self::Context) -> Self::Result {
        let lookup = || -> Result<_, ActorError> {
            let record = self
                .store
                .worker(&msg.name)?
                .ok_or_else(|| ActorError::NotFound(format!("worker '{}'", msg.name)))?;
            let previous = self
                .store
                .previous_version(&msg.name, record.active_version)?
                .ok_or_else(|| ActorError::NoPreviousVersion(msg.name.clone()))?;
            self.store.version(&msg.name, previous)?.ok_or_else(|| {
                ActorError::NotFound(format!("version {previous} of '{}'", msg.name))
            })
        };
        let stored = match lookup() {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        if let Some((route, other)) = self.route_conflict(&msg.name, &stored.routes) {
            return Box::pin(fut::ready(Err(ActorError::RouteConflict { route, other })));
        }
        let starting = self.start_version(Arc::new(stored.script.clone()), stored.routes.clone());
        self.go_live_when_started(
            starting,
            move |store| store.activate(&stored.script.name, stored.script.version),
            ctx,
        )
    }
}

impl Handler<Delete> for WorkerRegistry {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, msg: Delete, _ctx: &mut Self::Context) -> Self::Result {
        let Some(deleted) = self.store.delete(&msg.name, msg.keep_storage)? else {
            return Err(ActorError::NotFound(format!("worker '{}'", msg.name)));
        };
        self.forget(&msg.name, &deleted.storage, deleted.kept);
        Ok(())
    }
}

impl Handler<DeleteAt> for WorkerRegistry {
    type Result = Result<(), ActorError>;

    fn handle(&mut self, msg: DeleteAt, ctx: &mut Self::Context) -> Self::Result {
        if !self.newest(&msg.name, msg.revision) {
            return Ok(());
        }
        <Self as Handler<Delete>>::handle(
            self,
            Delete {
                name: msg.name,
                keep_storage: msg.keep_storage,
            },
            ctx,
        )
    }
}

impl Handler<DeleteAccount> for WorkerRegistry {
    type Result = Result<crate::state::AccountRemoval, ActorError>;

    fn handle(&mut self, msg: DeleteAccount, _ctx: &mut Self::Context) -> Self::Result {
        let removal = self.store.delete_account(&msg.id)?;
        for (name, storage) in &removal.workers {
            self.forget(name, storage, false);
        }
        if let Some(c) = &self.cleanup {
            for storage in &removal.retained {
                c.objects.do_send(WorkerGone {
                    storage: storage.clone(),
                    keep: false,
                });
                if let Some(cache) = &c.cache {
                    cache.purge(storage);
                }
            }
        }
        Ok(removal)
    }
}

impl Handler<Restore> for WorkerRegistry {
    type Result = ResponseActFuture<Self, Vec<(String, ActorError)>>;

    fn handle(&mut self, _: Restore, ctx: &mut Self::Context) -> Self::Result {
        let stored = match self.store.active_versions() {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(vec![("*".to_owned(), e.into())])),
        };
        let starts: Vec<_> = stored
            .into_iter()
            .map(|s| {
                let name = s.script.name.clone();
                let f = self.start_version(Arc::new(s.script), s.routes);
                async move { (name, f.await) }
            })
            .collect();
        let (tx, rx) = futures::channel::oneshot::channel();
        ctx.wait(
            fut::wrap_future::<_, Self>(futures::future::join_all(starts)).map(move |results, act, _| {
                let mut failed = Vec::new();
                for (name, r) in results {
                    match r {
                        Ok(d) => {
                            act.go_live(d);
                        }
                        Err(e) => {
                            tracing::error!(worker = %name, error = %e, "cannot restore worker");
                            failed.push((name, e));
                        }
                    }
                }
                let _ = tx.send(failed);
            }),
        );
        Box::pin(fut::wrap_future(
            async move { rx.await.unwrap_or_default() },
        ))
    }
}
