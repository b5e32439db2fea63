//! The deployment store: every uploaded version of every worker, which version
//! is active, and who owns what, in `<data_dir>/deployments.db` (SQLite, WAL,
//! synchronous=FULL). Accounts, tokens and the names accounts own live in the
//! same database (`accounts.rs`).
//!
//! A version is written once and never changed; deploy, rollback and delete only
//! move the `active_version` pointer (or remove the worker). A node restores the
//! active version of every worker from here at start. Secrets are sealed with
//! the node key before they are written (`secrets.rs`).

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::secrets::{open_spec, seal_spec, NodeKey};
use crate::js::WorkerScript;

/// The account every worker belongs to in `edged dev`, and the one workers
/// stored before accounts existed were given.
pub const DEFAULT_ACCOUNT: &str = "default";

/// One stored version: the script and the routes it was deployed with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredVersion {
    pub script: WorkerScript,
    pub routes: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// A worker's summary: its owner, its storage, its active version and all
/// stored versions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerRecord {
    pub name: String,
    pub account: String,
    #[serde(skip)]
    pub storage: String,
    pub active_version: u64,
    pub versions: Vec<u64>,
}

/// What a deleted worker leaves for the node to clean up.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    pub account: String,
    pub storage: String,
    /// The storage is kept for a later deploy of the name by the same account.
    pub kept: bool,
}

pub struct DeploymentStore {
    conn: Mutex<Connection>,
    key: NodeKey,
    /// Workers stored before storage ids existed, given one at open: their
    /// object storage must move from `do/<name>` to `do/<storage id>`.
    adopted: Vec<(String, String)>,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DeploymentStore {
    /// Opens (creating if needed) the store in `data_dir`, migrating a store
    /// made by an earlier edged.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        super::private_file::private_dir(data_dir).map_err(|e| StateError::Io {
            path: data_dir.to_owned(),
            source: e,
        })?;
        let key = NodeKey::load_or_create(data_dir)?;
        let path = data_dir.join("deployments.db");
        // Never an empty start over data: a store that is missing while the
        // node holds objects or namespaces, or that is damaged, stops the node.
        if path.exists() {
            super::durable::check_database(&path, &["versions", "workers"]).map_err(|why| {
                StateError::Damaged(format!("{} is damaged: {why}", path.display()))
            })?;
        } else if ["do", "kv"]
            .iter()
            .any(|d| std::fs::read_dir(data_dir.join(d)).is_ok_and(|mut e| e.next().is_some()))
        {
            return Err(StateError::Damaged(format!(
                "{} is missing but the data directory holds Durable Object or KV data: restore it, or move that data away to start empty",
                path.display()
            )));
        }
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS versions (
                 name TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 spec TEXT NOT NULL,
                 PRIMARY KEY (name, version)
             );
             CREATE TABLE IF NOT EXISTS workers (
                 name TEXT PRIMARY KEY,
                 active_version INTEGER NOT NULL
             );",
        )?;
        let has_account = conn.prepare("SELECT account FROM workers LIMIT 0").is_ok();
        if !has_account {
            conn.execute_batch(&format!(
                "ALTER TABLE workers ADD COLUMN account TEXT NOT NULL DEFAULT '{DEFAULT_ACCOUNT}';
                 ALTER TABLE workers ADD COLUMN storage TEXT NOT NULL DEFAULT '';"
            ))?;
        }
        super::accounts::create_tables(&conn)?;
        let mut store = DeploymentStore {
            conn: Mutex::new(conn),
            key,
            adopted: Vec::new(),
        };
        store.adopted = store.migrate()?;
        Ok(store)
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Brings rows from an earlier edged up to date: storage ids for workers
    /// without one, sealed secrets, and the hosts and namespaces their active
    /// versions use, claimed for their account. Returns the workers that got a
    /// storage id now.
    fn migrate(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let unassigned: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM workers WHERE storage = ''")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut adopted = Vec::new();
        for name in unassigned {
            let storage = super::names::new_storage_id();
            tx.execute(
                "UPDATE workers SET storage = ?2 WHERE name = ?1",
                params![name, storage],
            )?;
            adopted.push((name, storage));
        }
        let specs: Vec<(String, i64, String)> = {
            let mut stmt = tx.prepare("SELECT name, version, spec FROM versions")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (name, version, spec) in specs {
            let mut value: serde_json::Value = serde_json::from_str(&spec)?;
            if open_spec(&self.key, &mut value)? {
                seal_spec(&self.key, &mut value)?;
                tx.execute(
                    "UPDATE versions SET spec = ?3 WHERE name = ?1 AND version = ?2",
                    params![name, version, value.to_string()],
                )?;
            }
        }
        tx.commit()?;
        drop(conn);
        if !adopted.is_empty() {
            for stored in self.active_versions()? {
                let account = stored.script.account.clone();
                let hosts = stored
                    .routes
                    .iter()
                    .filter_map(|r| super::hosts::HostPattern::parse_route(r).ok())
                    .map(|(h, _)| h.canonical())
                    .collect::<Vec<_>>();
                // Earlier nodes had no owners: the first worker keeps a
                // shared name; a clash is logged, not fatal.
                if let Err(e) = self.claim(&account, &hosts, &kv_namespaces(&stored.script)) {
                    tracing::warn!(worker = %stored.script.name, error = %e, "cannot claim what an earlier version used");
                }
            }
        }
        Ok(adopted)
    }

    /// Every deployed worker's name and storage id.
    pub fn storage_ids(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, storage FROM workers ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Workers given a storage id when the store was opened (see `open`).
    pub fn adopted(&self) -> &[(String, String)] {
        &self.adopted
    }

    /// The version number the next upload of `name` gets.
    pub fn next_version(&self, name: &str) -> Result<u64, StateError> {
        let max: Option<i64> = self.conn().query_row(
            "SELECT MAX(version) FROM versions WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )?;
        Ok(max.unwrap_or(0) as u64 + 1)
    }

    fn spec(&self, stored: &StoredVersion) -> Result<String, StateError> {
        let mut value = serde_json::to_value(stored)?;
        seal_spec(&self.key, &mut value)?;
        Ok(value.to_string())
    }

    fn unspec(
        &self,
        spec: &str,
        account: &str,
        storage: &str,
    ) -> Result<StoredVersion, StateError> {
        let mut value: serde_json::Value = serde_json::from_str(spec)?;
        open_spec(&self.key, &mut value)?;
        let mut stored: StoredVersion = serde_json::from_value(value)?;
        // The owner and storage come from the worker's row, not the spec.
        stored.script.account = account.to_owned();
        stored.script.storage = storage.to_owned();
        Ok(stored)
    }

    /// Stores a new version and makes it active, in one transaction, after
    /// claiming for the script's account the `hosts` (canonical host patterns)
    /// and KV namespaces it uses (`accounts.rs`).
    pub fn insert_active(
        &self,
        script: &WorkerScript,
        routes: &[String],
        hosts: &[String],
    ) -> Result<StoredVersion, StateError> {
        let stored = StoredVersion {
            script: script.clone(),
            routes: routes.to_vec(),
            created_at: now_secs(),
        };
        let spec = self.spec(&stored)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        super::accounts::check_worker_name(&tx, &script.name, &script.account)?;
        super::accounts::claim_in(&tx, &script.account, hosts, &kv_namespaces(script))?;
        tx.execute(
            "INSERT INTO versions (name, version, spec) VALUES (?1, ?2, ?3)",
            params![script.name, script.version as i64, spec],
        )?;
        tx.execute(
            "INSERT INTO workers (name, active_version, account, storage) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET active_version = excluded.active_version",
            params![
                script.name,
                script.version as i64,
                script.account,
                script.storage
            ],
        )?;
        tx.execute("DELETE FROM retained WHERE name = ?1", params![script.name])?;
        tx.commit()?;
        Ok(stored)
    }

    /// Whether [`DeploymentStore::insert_active`] would accept the worker's
    /// name and claims (hosts, KV namespaces), without storing anything.
    pub fn check_claims(&self, script: &WorkerScript, hosts: &[String]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        super::accounts::check_worker_name(&tx, &script.name, &script.account)?;
        super::accounts::claim_in(&tx, &script.account, hosts, &kv_namespaces(script))?;
        tx.rollback()?;
        Ok(())
    }

    /// Points `name` at an already stored version.
    pub fn activate(&self, name: &str, version: u64) -> Result<(), StateError> {
        let n = self.conn().execute(
            "UPDATE workers SET active_version = ?2 WHERE name = ?1",
            params![name, version as i64],
        )?;
        if n == 0 {
            return Err(StateError::NotFound(format!("worker '{name}'")));
        }
        Ok(())
    }

    fn owner_row(&self, name: &str) -> Result<Option<(String, String)>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT account, storage FROM workers WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn version(&self, name: &str, version: u64) -> Result<Option<StoredVersion>, StateError> {
        let Some((account, storage)) = self.owner_row(name)? else {
            return Ok(None);
        };
        let spec: Option<String> = self
            .conn()
            .query_row(
                "SELECT spec FROM versions WHERE name = ?1 AND version = ?2",
                params![name, version as i64],
                |r| r.get(0),
            )
            .optional()?;
        spec.map(|s| self.unspec(&s, &account, &storage))
            .transpose()
    }

    /// The newest stored version of `name` older than `version`.
    pub fn previous_version(&self, name: &str, version: u64) -> Result<Option<u64>, StateError> {
        let v: Option<i64> = self.conn().query_row(
            "SELECT MAX(version) FROM versions WHERE name = ?1 AND version < ?2",
            params![name, version as i64],
            |r| r.get(0),
        )?;
        Ok(v.map(|v| v as u64))
    }

    /// Every worker with its active version, for restoring at start.
    pub fn active_versions(&self) -> Result<Vec<StoredVersion>, StateError> {
        let rows: Vec<(String, String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT v.spec, w.account, w.storage FROM workers w JOIN versions v
                 ON v.name = w.name AND v.version = w.active_version ORDER BY w.name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        rows.iter()
            .map(|(spec, account, storage)| self.unspec(spec, account, storage))
            .collect()
    }

    pub fn worker(&self, name: &str) -> Result<Option<WorkerRecord>, StateError> {
        let conn = self.conn();
        let row: Option<(i64, String, String)> = conn
            .query_row(
                "SELECT active_version, account, storage FROM workers WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((active, account, storage)) = row else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare("SELECT version FROM versions WHERE name = ?1 ORDER BY version")?;
        let versions = stmt
            .query_map(params![name], |r| r.get::<_, i64>(0).map(|v| v as u64))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(WorkerRecord {
            name: name.to_owned(),
            account,
            storage,
            active_version: active as u64,
            versions,
        }))
    }

    /// Removes a worker and all its versions. Its storage is forgotten unless
    /// `keep_storage`: then the name and storage stay reserved to its account,
    /// for a later deploy to pick up. Returns what it owned, if it existed.
    pub fn delete(&self, name: &str, keep_storage: bool) -> Result<Option<Deleted>, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT account, storage FROM workers WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        tx.execute("DELETE FROM workers WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM versions WHERE name = ?1", params![name])?;
        if let (Some((account, storage)), true) = (&row, keep_storage) {
            tx.execute(
                "INSERT OR REPLACE INTO retained (name, account, storage) VALUES (?1, ?2, ?3)",
                params![name, account, storage],
            )?;
        }
        tx.commit()?;
        Ok(row.map(|(account, storage)| Deleted {
            account,
            storage,
            kept: keep_storage,
        }))
    }
}

/// The KV namespaces a script binds.
pub fn kv_namespaces(script: &WorkerScript) -> Vec<String> {
    script
        .bindings
        .iter()
        .filter_map(|b| match b {
            crate::js::Binding::KvNamespace { namespace, .. } => Some(namespace.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn script(name: &str, version: u64) -> WorkerScript {
        WorkerScript {
            crons: Vec::new(),
            name: name.into(),
            version,
            main_module: "w.js".into(),
            modules: BTreeMap::from([("w.js".to_owned(), format!("// v{version}").into())]),
            bindings: vec![crate::js::Binding::SecretText {
                name: "KEY".into(),
                text: "s3cr3t".into(),
            }],
            compatibility_date: None,
            compatibility_flags: Vec::new(),
            deployed_at_ms: 0,
            assets: None,
            account: DEFAULT_ACCOUNT.into(),
            storage: "0".repeat(32),
        }
    }

    #[test]
    fn versions_activate_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DeploymentStore::open(dir.path()).unwrap();
            assert_eq!(store.next_version("a").unwrap(), 1);
            store
                .insert_active(&script("a", 1), &["a.com/*".into()], &["a.com".into()])
                .unwrap();
            store.insert_active(&script("a", 2), &[], &[]).unwrap();
            assert_eq!(store.previous_version("a", 2).unwrap(), Some(1));
            store.activate("a", 1).unwrap();
        }
        let raw = std::fs::read(dir.path().join("deployments.db")).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"s3cr3t"),
            "a secret is stored in clear"
        );
        let store = DeploymentStore::open(dir.path()).unwrap();
        let active = store.active_versions().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].script.version, 1);
        assert_eq!(active[0].routes, vec!["a.com/*".to_owned()]);
        assert_eq!(active[0].script.bindings, script("a", 1).bindings);
        assert_eq!(store.worker("a").unwrap().unwrap().versions, vec![1, 2]);
        assert!(store.delete("a", false).unwrap().is_some());
        assert!(store.active_versions().unwrap().is_empty());
        assert_eq!(store.next_version("a").unwrap(), 1);
    }
}
