//! The engine: the one interface between edged and NATS JetStream. Nothing
//! else in edged names a bucket, a subject or an async-nats type.
//!
//! Buckets (all with the configured replicas, file storage):
//! - `edged_nodes`: membership, `n.<node>` → [`super::NodeInfo`] JSON, history 1,
//!   `max_age` = the lease, so a node that stops renewing vanishes by itself;
//! - `edged_owners`: Durable Object ownership, `o.<digest>` → owner record;
//!   written only with `create` (compare-and-set on absence), so of two nodes
//!   racing to place one id exactly one wins; the revision is the owner's epoch;
//! - `edged_deploys`: `w.<worker>` → the worker's current deployment record,
//!   history 8, written with compare-and-set on the revision read before;
//! - `edged_cron`: `c.<worker>.<minute>.<n>` claims (`create`), `max_age` 10 min;
//! - `edged_claims`: which account owns what, cluster-wide: `ns.<namespace>` →
//!   account (`create` only), `hosts` → every route host pattern's account
//!   (JSON, compare-and-set on the revision, so overlap checks see them all);
//! - `edged_alarms`: `a.<storage id>.<digest>` → where a Durable Object's alarm
//!   is due and which owner set it (`alarms.rs`), so that another node fires
//!   the alarm of an idle object whose owner died;
//! - object store `edged_assets`: static asset blobs, `<account>/<sha256>`
//!   (content-addressed, so every PoP can fetch what a deployment names);
//! - object store `edged_bundles`: deployment bundles by SHA-256 (sealed with
//!   the cluster key, `deploys.rs`);
//! - stream `EDGED_DOLOG`: each Durable Object's commit log on its own subject
//!   `dolog.<storage id>.<digest>` (`state::replica` records), appended only with
//!   `Nats-Expected-Last-Subject-Sequence`, so one owner at a time can append
//!   and a stale owner's append is refused; the subject's messages before its
//!   latest image are purged.
//! - stream `EDGED_KV`: the KV write log, `kv.<namespace>` (`state::kv::replica`
//!   records), one global order, `max_age` = `kv_log_max_age_s`; object stores
//!   `edged_kv_values` (values too large for a record, kept twice the log's
//!   age) and `edged_kv_snapshots` (`latest`: every live key as of a sequence).
//!
//! Every call is bounded in time (the client's request timeout), so a core that
//! is down makes callers fail fast with [`EngineError::Unreachable`].

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

const NODES: &str = "edged_nodes";
const OWNERS: &str = "edged_owners";
const DEPLOYS: &str = "edged_deploys";
const CRON: &str = "edged_cron";
const CLAIMS: &str = "edged_claims";
const ACCOUNTS: &str = "edged_accounts";
const BUNDLES: &str = "edged_bundles";
const ALARMS: &str = "edged_alarms";
const ASSETS: &str = "edged_assets";
const DOLOG: &str = "EDGED_DOLOG";
const KVLOG: &str = "EDGED_KV";
const KV_VALUES: &str = "edged_kv_values";
const KV_SNAPSHOTS: &str = "edged_kv_snapshots";
const KV_SNAPSHOT: &str = "latest";

/// The ownership bucket's size bound (about 5 million objects).
const OWNERS_MAX_BYTES: i64 = 1 << 30;

/// How long one engine call may take before it counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("the cluster engine (NATS JetStream) is unreachable: {0}")]
    Unreachable(String),
    /// A compare-and-set lost: someone else wrote first.
    #[error("the record was changed by another node meanwhile")]
    Conflict,
}

fn unreachable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unreachable(e.to_string())
}

/// One change seen by a watch.
pub struct Change {
    pub key: String,
    /// `None`: the key was deleted or purged.
    pub value: Option<Bytes>,
    pub revision: u64,
    /// When the engine stored it.
    pub created: std::time::SystemTime,
}

/// A stream of changes; ends when the connection to the engine is lost.
pub type Changes = futures::stream::BoxStream<'static, Change>;

/// The client connection (it reconnects by itself).
#[derive(Clone)]
pub struct Engine {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// The buckets, once the core has a JetStream quorum to create or open them.
#[derive(Clone)]
pub struct Buckets {
    nodes: kv::Store,
    owners: kv::Store,
    deploys: kv::Store,
    cron: kv::Store,
    claims: kv::Store,
    accounts: kv::Store,
    alarms: kv::Store,
    bundles: object_store::ObjectStore,
    js: jetstream::Context,
    log: jetstream::stream::Stream,
    kvlog: jetstream::stream::Stream,
    kv_values: object_store::ObjectStore,
    kv_snapshots: object_store::ObjectStore,
    assets: object_store::ObjectStore,
}

/// The KV log's records from a sequence on: `(sequence, record)`.
pub type KvTail = futures::stream::BoxStream<'static, Result<(u64, Bytes), EngineError>>;

impl Engine {
    /// Connects in the background: a core that is down at start is retried
    /// for ever, and the node serves meanwhile.
    pub async fn connect(urls: &[String], name: &str) -> Result<Engine, EngineError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(1))
            .request_timeout(Some(CALL_TIMEOUT))
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
            .connect(urls.to_vec())
            .await
            .map_err(unreachable)?;
        let js = jetstream::new(client.clone());
        Ok(Engine { client, js })
    }

    pub fn connected(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    async fn bucket(&self, config: kv::Config) -> Result<kv::Store, EngineError> {
        let name = config.bucket.clone();
        match self.js.create_key_value(config).await {
            Ok(store) => Ok(store),
            // Made by another node with what it considered the same config.
            Err(create) => self
                .js
                .get_key_value(&name)
                .await
                .map_err(|e| unreachable(format!("bucket {name}: {create}; {e}"))),
        }
    }

    async fn object_store(
        &self,
        config: object_store::Config,
    ) -> Result<object_store::ObjectStore, EngineError> {
        let name = config.bucket.clone();
        match self.js.create_object_store(config).await {
            Ok(s) => Ok(s),
            Err(create) => self
                .js
                .get_object_store(&name)
                .await
                .map_err(|e| unreachable(format!("object store {name}: {create}; {e}"))),
        }
    }

    /// Creates (or opens) every bucket.
    pub async fn open(
        &self,
        replicas: usize,
        lease: Duration,
        kv_max_age: Duration,
    ) -> Result<Buckets, EngineError> {
        let file = jetstream::stream::StorageType::File;
        let nodes = self
            .bucket(kv::Config {
                bucket: NODES.into(),
                history: 1,
                max_age: lease,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let owners = self
            .bucket(kv::Config {
                bucket: OWNERS.into(),
                history: 1,
                // Bounded: past it new objects cannot be placed (a clear
                // error), while membership and everything else keep working.
                max_bytes: OWNERS_MAX_BYTES,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let deploys = self
            .bucket(kv::Config {
                bucket: DEPLOYS.into(),
                history: 8,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let cron = self
            .bucket(kv::Config {
                bucket: CRON.into(),
                history: 1,
                max_age: Duration::from_secs(600),
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let claims = self
            .bucket(kv::Config {
                bucket: CLAIMS.into(),
                history: 1,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        let accounts = self
            .bucket(kv::Config {
                bucket: ACCOUNTS.into(),
                history: 1,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        // Where each object's alarm is due and which node set it, so that
        // the alarm of an idle object whose owner died still fires.
        let alarms = self
            .bucket(kv::Config {
                bucket: ALARMS.into(),
                history: 1,
                max_bytes: OWNERS_MAX_BYTES,
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        // An object store kept until deleted.
        let kept = |bucket: &str| object_store::Config {
            bucket: bucket.into(),
            storage: file,
            num_replicas: replicas,
            ..Default::default()
        };
        let bundles = self.object_store(kept(BUNDLES)).await?;
        let log = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: DOLOG.into(),
                subjects: vec!["dolog.>".into()],
                storage: file,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| unreachable(format!("stream {DOLOG}: {e}")))?;
        let kvlog = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: KVLOG.into(),
                subjects: vec!["kv.>".into()],
                storage: file,
                num_replicas: replicas,
                max_age: kv_max_age,
                ..Default::default()
            })
            .await
            .map_err(|e| unreachable(format!("stream {KVLOG}: {e}")))?;
        let kv_values = self
            .object_store(object_store::Config {
                bucket: KV_VALUES.into(),
                storage: file,
                num_replicas: replicas,
                max_age: kv_max_age * 2,
                ..Default::default()
            })
            .await?;
        let kv_snapshots = self.object_store(kept(KV_SNAPSHOTS)).await?;
        let assets = self.object_store(kept(ASSETS)).await?;
        Ok(Buckets {
            assets,
            nodes,
            owners,
            deploys,
            cron,
            claims,
            accounts,
            alarms,
            bundles,
            js: self.js.clone(),
            log,
            kvlog,
            kv_values,
            kv_snapshots,
        })
    }
}

/// What the engine holds under a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Presence {
    Never,
    Deleted,
    Live(Bytes),
}

/// The keys of a bucket that are not deleted.
async fn live_keys(store: &kv::Store) -> Result<Vec<String>, EngineError> {
    let keys = store.keys().await.map_err(unreachable)?;
    keys.map(|k| k.map_err(unreachable))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn changes(watch: kv::Watch) -> Changes {
    watch
        .take_while(|e| futures::future::ready(e.is_ok()))
        .filter_map(|e| async move {
            let e = e.ok()?;
            Some(Change {
                key: e.key,
                value: (e.operation == kv::Operation::Put).then_some(e.value),
                revision: e.revision,
                created: e.created.into(),
            })
        })
        .boxed()
}

async fn put_object(
    store: &object_store::ObjectStore,
    name: &str,
    data: Bytes,
) -> Result<(), EngineError> {
    let mut reader: &[u8] = &data;
    store
        .put(name, &mut reader)
        .await
        .map(|_| ())
        .map_err(unreachable)
}

/// Object `name` of `store`, refused past `limit` bytes (`what` names it in
/// the error).
async fn get_object(
    store: &object_store::ObjectStore,
    name: &str,
    limit: usize,
    what: &str,
) -> Result<Bytes, EngineError> {
    let object = store.get(name).await.map_err(unreachable)?;
    let mut buf = Vec::new();
    object
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(unreachable)?;
    if buf.len() > limit {
        return Err(unreachable(format!("{what} {name} is over {limit} bytes")));
    }
    Ok(buf.into())
}

/// The latest value of `key`, read from the stream's leader: the KV API's
/// reads go to any replica (direct get), which can lag behind a write another
/// node just made, and ownership and deployment records must not.
async fn entry(store: &kv::Store, key: String) -> Result<Option<(Bytes, u64)>, EngineError> {
    let subject = format!("{}{key}", store.prefix);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let deleted = m
                .headers
                .get("KV-Operation")
                .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
            Ok((!deleted).then_some((m.payload, m.sequence)))
        }
        Err(e)
            if e.kind()
                == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            Ok(None)
        }
        Err(e) => Err(unreachable(e)),
    }
}

/// A write that lost its compare-and-set (the client reports some of those
/// as other errors: "wrong last sequence", JetStream error 10071/10164; an
/// object log's append tells a busy subject apart first, [`subject_busy`]).
fn lost_race(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("wrong last sequence")
}

/// JetStream's refusals of an append with an expected subject sequence that
/// compared nothing: 10164 (a constant "wrong last sequence", without the
/// sequence) when the stream leader still had an earlier write to the same
/// subject proposed but not applied, and 10163 ("temporarily unavailable").
/// For an object log that earlier write is usually the owner's own previous
/// record: the leader sends its acknowledgement before it clears the
/// subject's in-process mark (nats-server `jetstream_batching.go`,
/// `expectedPerSubjectInProcess`), so an owner appending the next record at
/// once can be refused. It says nothing about who owns the log; the append is
/// tried again and a real mismatch then answers 10071 with the sequence.
fn subject_busy(e: &impl std::fmt::Display) -> bool {
    let text = e.to_string();
    text.contains("error code 10164") || text.contains("error code 10163")
}

/// How often an append refused with [`subject_busy`] is tried again, and the
/// first pause (doubling, at most 32 ms): about 0.4 s in all.
const BUSY_RETRIES: u32 = 16;
const BUSY_PAUSE: Duration = Duration::from_millis(1);

impl Buckets {
    /// Renews this node's membership; `Ok` once the core has stored it.
    pub async fn announce(&self, node: &str, info: Bytes) -> Result<u64, EngineError> {
        self.nodes
            .put(format!("n.{node}"), info)
            .await
            .map_err(unreachable)
    }

    /// The account that owns KV namespace `ns` cluster-wide, claiming it
    /// for `account` if nobody does (`claim`), read from the stream leader.
    pub async fn namespace_claim(
        &self,
        ns: &str,
        account: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        let key = format!("ns.{ns}");
        if let Some(account) = account {
            match self
                .claims
                .create(&key, Bytes::from(account.to_owned()))
                .await
            {
                Ok(_) => return Ok(Some(account.to_owned())),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => {}
                Err(e) => return Err(unreachable(e)),
            }
        }
        Ok(entry(&self.claims, key)
            .await?
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The route host claims (pattern → account) and their revision.
    pub async fn host_claims(&self) -> Result<(Bytes, u64), EngineError> {
        Ok(entry(&self.claims, "hosts".into())
            .await?
            .unwrap_or((Bytes::from_static(b"{}"), 0)))
    }

    /// Replaces the host claims if they are still at `revision` (0: none yet).
    pub async fn set_host_claims(&self, value: Bytes, revision: u64) -> Result<(), EngineError> {
        let result = if revision == 0 {
            self.claims
                .create("hosts", value)
                .await
                .map(|_| ())
                .map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) {
                        EngineError::Conflict
                    } else {
                        unreachable(e)
                    }
                })
        } else {
            self.claims
                .update("hosts", value, revision)
                .await
                .map(|_| ())
                .map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e) {
                        EngineError::Conflict
                    } else {
                        unreachable(e)
                    }
                })
        };
        result
    }

    /// Releases KV namespace `ns` if `account` owns it (the account was
    /// removed); the names of every namespace `account` owns are
    /// [`Buckets::namespaces_of`].
    pub async fn namespace_release(&self, ns: &str, account: &str) -> Result<(), EngineError> {
        let key = format!("ns.{ns}");
        if let Some((owner, revision)) = entry(&self.claims, key.clone()).await? {
            if owner.as_ref() == account.as_bytes() {
                self.claims
                    .delete_expect_revision(&key, Some(revision))
                    .await
                    .map_err(unreachable)?;
            }
        }
        Ok(())
    }

    /// Every KV namespace `account` owns cluster-wide.
    pub async fn namespaces_of(&self, account: &str) -> Result<Vec<String>, EngineError> {
        let mut out = Vec::new();
        for key in live_keys(&self.claims).await? {
            let Some(ns) = key.strip_prefix("ns.") else {
                continue;
            };
            if let Some((owner, _)) = entry(&self.claims, key.clone()).await? {
                if owner.as_ref() == account.as_bytes() {
                    out.push(ns.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// An account or token record (`a.<id>`, `t.<id>`): what the engine
    /// holds for it, telling "never written" from "deleted".
    pub async fn account_entry(&self, key: &str) -> Result<Presence, EngineError> {
        let subject = format!("{}{key}", self.accounts.prefix);
        match self
            .accounts
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) => {
                let deleted = m
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                Ok(if deleted {
                    Presence::Deleted
                } else {
                    Presence::Live(m.payload)
                })
            }
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(Presence::Never)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Writes an account or token record if the key has none live;
    /// `Conflict` if it has.
    pub async fn account_create(&self, key: &str, value: Bytes) -> Result<(), EngineError> {
        match self.accounts.create(key, value).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => {
                Err(EngineError::Conflict)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Deletes an account or token record (a marker stays, so a node that
    /// was away learns of it).
    pub async fn account_delete(&self, key: &str) -> Result<(), EngineError> {
        self.accounts.delete(key).await.map_err(unreachable)
    }

    /// Every live account and token key.
    pub async fn account_keys(&self) -> Result<Vec<String>, EngineError> {
        live_keys(&self.accounts).await
    }

    /// The latest record (or deletion) of every account and token, then
    /// every change.
    pub async fn watch_accounts(&self) -> Result<Changes, EngineError> {
        let w = self
            .accounts
            .watch_with_history(">")
            .await
            .map_err(unreachable)?;
        Ok(changes(w))
    }

    /// Every worker that has a deployment record.
    pub async fn deployed_workers(&self) -> Result<Vec<String>, EngineError> {
        Ok(live_keys(&self.deploys)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix("w.").map(str::to_owned))
            .collect())
    }

    /// Records (`Some`) or removes where an object's alarm is due.
    pub async fn set_alarm_entry(
        &self,
        key: &str,
        entry: Option<Bytes>,
    ) -> Result<(), EngineError> {
        let key = format!("a.{key}");
        match entry {
            Some(value) => self
                .alarms
                .put(key, value)
                .await
                .map(|_| ())
                .map_err(unreachable),
            None => self.alarms.delete(key).await.map_err(unreachable),
        }
    }

    /// Every object's alarm entry, then every change.
    pub async fn watch_alarms(&self) -> Result<Changes, EngineError> {
        let w = self
            .alarms
            .watch_with_history(">")
            .await
            .map_err(unreachable)?;
        Ok(changes(w))
    }

    /// Removes this node's membership record (it is leaving on purpose):
    /// the others see it gone at once instead of a lease later.
    pub async fn withdraw(&self, node: &str) -> Result<(), EngineError> {
        self.nodes
            .delete(format!("n.{node}"))
            .await
            .map_err(unreachable)
    }

    /// Every live member's record, then every change.
    pub async fn watch_members(&self) -> Result<Changes, EngineError> {
        let w = self
            .nodes
            .watch_with_history(">")
            .await
            .map_err(unreachable)?;
        Ok(changes(w))
    }

    /// The owner record of an object, with its revision (the epoch).
    pub async fn owner(&self, key: &str) -> Result<Option<(Bytes, u64)>, EngineError> {
        entry(&self.owners, format!("o.{key}")).await
    }

    /// Records an owner if the object has none yet; `Conflict` if it has.
    pub async fn claim_owner(&self, key: &str, record: Bytes) -> Result<u64, EngineError> {
        match self.owners.create(format!("o.{key}"), record).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => {
                Err(EngineError::Conflict)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// A worker's deployment record and its revision.
    pub async fn deployment(&self, worker: &str) -> Result<Option<(Bytes, u64)>, EngineError> {
        entry(&self.deploys, format!("w.{worker}")).await
    }

    /// Writes a worker's deployment record if its revision is still
    /// `expected` (`None`: if it has none).
    pub async fn set_deployment(
        &self,
        worker: &str,
        record: Bytes,
        expected: Option<u64>,
    ) -> Result<u64, EngineError> {
        let key = format!("w.{worker}");
        match expected {
            None => match self.deploys.create(key, record).await {
                Ok(rev) => Ok(rev),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => {
                    Err(EngineError::Conflict)
                }
                Err(e) => Err(unreachable(e)),
            },
            Some(rev) => match self.deploys.update(key, record, rev).await {
                Ok(rev) => Ok(rev),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e) => {
                    Err(EngineError::Conflict)
                }
                Err(e) => Err(unreachable(e)),
            },
        }
    }

    /// The latest deployment record of every worker, then every change.
    pub async fn watch_deployments(&self) -> Result<Changes, EngineError> {
        let w = self
            .deploys
            .watch_with_history(">")
            .await
            .map_err(unreachable)?;
        Ok(changes(w))
    }

    /// Stores one static asset blob of `account` (content-addressed: `hash`
    /// is its SHA-256, checked by whoever stores it).
    pub async fn put_asset(
        &self,
        account: &str,
        hash: &str,
        data: Bytes,
    ) -> Result<(), EngineError> {
        put_object(&self.assets, &format!("{account}/{hash}"), data).await
    }

    /// One asset blob of `account`, refused past `limit` bytes.
    pub async fn asset(
        &self,
        account: &str,
        hash: &str,
        limit: usize,
    ) -> Result<Bytes, EngineError> {
        get_object(&self.assets, &format!("{account}/{hash}"), limit, "asset").await
    }

    /// Whether the engine holds an asset blob of `account`.
    pub async fn has_asset(&self, account: &str, hash: &str) -> Result<bool, EngineError> {
        match self.assets.info(format!("{account}/{hash}")).await {
            Ok(info) => Ok(!info.deleted),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Deletes every asset blob of `account` (it was removed).
    pub async fn purge_assets(&self, account: &str) -> Result<(), EngineError> {
        let prefix = format!("{account}/");
        let mut list = self.assets.list().await.map_err(unreachable)?;
        let mut names = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(unreachable)?;
            if !info.deleted && info.name.starts_with(&prefix) {
                names.push(info.name);
            }
        }
        for name in names {
            self.assets.delete(&name).await.map_err(unreachable)?;
        }
        Ok(())
    }

    pub async fn put_bundle(&self, name: &str, data: Bytes) -> Result<(), EngineError> {
        put_object(&self.bundles, name, data).await
    }

    pub async fn bundle(&self, name: &str, limit: usize) -> Result<Bytes, EngineError> {
        get_object(&self.bundles, name, limit, "bundle").await
    }

    /// `true` for the one caller that claims `key` first (once per cluster).
    pub async fn claim_once(&self, key: &str) -> Result<bool, EngineError> {
        match self.cron.create(key, Bytes::from_static(b"1")).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists || lost_race(&e) => Ok(false),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Whether `node`'s membership record is still in the engine (read from
    /// the stream's leader: it expires there a lease after its last renewal,
    /// by which time the node has fenced itself).
    pub async fn member_present(&self, node: &str) -> Result<bool, EngineError> {
        Ok(entry(&self.nodes, format!("n.{node}")).await?.is_some())
    }

    /// Moves an object's ownership if its record is still at `expected`.
    pub async fn take_owner(
        &self,
        key: &str,
        record: Bytes,
        expected: u64,
    ) -> Result<u64, EngineError> {
        match self
            .owners
            .update(format!("o.{key}"), record, expected)
            .await
        {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision || lost_race(&e) => {
                Err(EngineError::Conflict)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// The sequence of the last record in an object's log (0: none).
    pub async fn log_last(&self, key: &str) -> Result<u64, EngineError> {
        match self
            .log
            .get_last_raw_message_by_subject(&format!("dolog.{key}"))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(0)
            }
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Appends one record to an object's log if its last record is still
    /// `expected` (0: the log is empty); the record's sequence once the core
    /// has it on a quorum's disks. `Conflict`: another owner appended first.
    /// A leader still busy with this subject ([`subject_busy`]) is asked again.
    pub async fn log_append(
        &self,
        key: &str,
        record: Bytes,
        expected: u64,
    ) -> Result<u64, EngineError> {
        let (mut pause, mut attempt) = (BUSY_PAUSE, 0);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            let ack = self
                .js
                .publish_with_headers(format!("dolog.{key}"), headers, record.clone())
                .await
                .map_err(unreachable)?
                .await;
            match ack {
                Ok(a) => return Ok(a.sequence),
                Err(e) if subject_busy(&e) => {
                    if attempt == BUSY_RETRIES {
                        // Still busy: the outcome is not a fencing verdict.
                        return Err(unreachable(e));
                    }
                    attempt += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(32));
                }
                Err(e)
                    if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
                        || lost_race(&e) =>
                {
                    return Err(EngineError::Conflict);
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
    }

    /// Appends a KV write to the log; its sequence once the core has it on
    /// a quorum's disks.
    pub async fn kv_append(&self, ns: &str, record: Bytes) -> Result<u64, EngineError> {
        self.js
            .publish(format!("kv.{ns}"), record)
            .await
            .map_err(unreachable)?
            .await
            .map(|a| a.sequence)
            .map_err(unreachable)
    }

    /// The first and last sequence the KV log holds (`first > last`: empty).
    pub async fn kv_bounds(&self) -> Result<(u64, u64), EngineError> {
        let mut stream = self.kvlog.clone();
        let info = stream.info().await.map_err(unreachable)?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    }

    /// The KV log from sequence `from` on, as it grows.
    pub async fn kv_tail(&self, from: u64) -> Result<KvTail, EngineError> {
        let consumer = self
            .kvlog
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: "kv.>".into(),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(unreachable)?;
        let messages = consumer.messages().await.map_err(unreachable)?;
        Ok(messages
            .map(|m| {
                let m = m.map_err(unreachable)?;
                let seq = m.info().map_err(unreachable)?.stream_sequence;
                Ok((seq, m.payload.clone()))
            })
            .boxed())
    }

    /// Stores a KV value too large for a log record.
    pub async fn kv_put_value(&self, name: &str, data: Bytes) -> Result<(), EngineError> {
        put_object(&self.kv_values, name, data).await
    }

    pub async fn kv_value(&self, name: &str, limit: usize) -> Result<Bytes, EngineError> {
        get_object(&self.kv_values, name, limit, "KV value").await
    }

    /// Replaces the KV snapshot with the file at `path`.
    pub async fn kv_put_snapshot(&self, path: &std::path::Path) -> Result<(), EngineError> {
        let mut file = tokio::fs::File::open(path).await.map_err(unreachable)?;
        self.kv_snapshots
            .put(KV_SNAPSHOT, &mut file)
            .await
            .map(|_| ())
            .map_err(unreachable)
    }

    /// Writes the KV snapshot to `path`; `false` when there is none.
    pub async fn kv_snapshot(&self, path: &std::path::Path) -> Result<bool, EngineError> {
        let mut object = match self.kv_snapshots.get(KV_SNAPSHOT).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(unreachable(e)),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(unreachable)?;
        tokio::io::copy(&mut object, &mut file)
            .await
            .map_err(unreachable)?;
        file.sync_all().await.map_err(unreachable)?;
        Ok(true)
    }

    /// Every record of an object's log up to sequence `until`, in order.
    pub async fn log_read<F>(
        &self,
        key: &str,
        until: u64,
        mut each: impl FnMut(Bytes) -> F,
    ) -> Result<(), EngineError>
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        if until == 0 {
            return Ok(());
        }
        let consumer = self
            .log
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("dolog.{key}"),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(unreachable)?;
        let mut messages = consumer.messages().await.map_err(unreachable)?;
        loop {
            let next = tokio::time::timeout(CALL_TIMEOUT, messages.next())
                .await
                .map_err(|_| unreachable("the object's log stopped arriving"))?;
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(unreachable(e)),
                None => return Err(unreachable("the object's log ended early")),
            };
            let seq = m.info().map_err(unreachable)?.stream_sequence;
            if seq > until {
                return Ok(());
            }
            each(m.payload.clone())
                .await
                .map_err(EngineError::Unreachable)?;
            if seq == until {
                return Ok(());
            }
        }
    }

    /// Drops the logs of every object of a worker's storage id.
    pub async fn log_purge_storage(&self, storage: &str) -> Result<(), EngineError> {
        self.log
            .purge()
            .filter(format!("dolog.{storage}.>"))
            .await
            .map(|_| ())
            .map_err(unreachable)
    }

    /// Drops an object's records before `seq` (the first record of an image).
    pub async fn log_purge_before(&self, key: &str, seq: u64) -> Result<(), EngineError> {
        self.log
            .purge()
            .filter(format!("dolog.{key}"))
            .sequence(seq)
            .await
            .map(|_| ())
            .map_err(unreachable)
    }
}
