//! The deployment store: every uploaded version of every worker, and which version
//! is active, in `<data_dir>/deployments.db` (SQLite, WAL, synchronous=FULL).
//!
//! A version is written once and never changed; deploy, rollback and delete only
//! move the `active_version` pointer (or remove the worker). A node restores the
//! active version of every worker from here at start.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::error::StateError;
use crate::js::WorkerScript;

/// One stored version: the script and the routes it was deployed with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredVersion {
    pub script: WorkerScript,
    pub routes: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// A worker's summary: its active version and all stored versions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerRecord {
    pub name: String,
    pub active_version: u64,
    pub versions: Vec<u64>,
}

pub struct DeploymentStore {
    conn: Mutex<Connection>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DeploymentStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StateError::Io {
            path: data_dir.to_owned(),
            source: e,
        })?;
        let conn = Connection::open(data_dir.join("deployments.db"))?;
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
        Ok(DeploymentStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
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

    /// Stores a new version and makes it active, in one transaction.
    pub fn insert_active(
        &self,
        script: &WorkerScript,
        routes: &[String],
    ) -> Result<StoredVersion, StateError> {
        let stored = StoredVersion {
            script: script.clone(),
            routes: routes.to_vec(),
            created_at: now_secs(),
        };
        let spec = serde_json::to_string(&stored)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO versions (name, version, spec) VALUES (?1, ?2, ?3)",
            params![script.name, script.version as i64, spec],
        )?;
        tx.execute(
            "INSERT INTO workers (name, active_version) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET active_version = excluded.active_version",
            params![script.name, script.version as i64],
        )?;
        tx.commit()?;
        Ok(stored)
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

    pub fn version(&self, name: &str, version: u64) -> Result<Option<StoredVersion>, StateError> {
        let spec: Option<String> = self
            .conn()
            .query_row(
                "SELECT spec FROM versions WHERE name = ?1 AND version = ?2",
                params![name, version as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match spec {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
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
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT v.spec FROM workers w JOIN versions v
             ON v.name = w.name AND v.version = w.active_version ORDER BY w.name",
        )?;
        let specs = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        specs
            .iter()
            .map(|s| serde_json::from_str(s).map_err(StateError::from))
            .collect()
    }

    pub fn worker(&self, name: &str) -> Result<Option<WorkerRecord>, StateError> {
        let conn = self.conn();
        let active: Option<i64> = conn
            .query_row(
                "SELECT active_version FROM workers WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(active) = active else {
            return Ok(None);
        };
        let mut stmt =
            conn.prepare("SELECT version FROM versions WHERE name = ?1 ORDER BY version")?;
        let versions = stmt
            .query_map(params![name], |r| r.get::<_, i64>(0).map(|v| v as u64))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(WorkerRecord {
            name: name.to_owned(),
            active_version: active as u64,
            versions,
        }))
    }

    /// Removes a worker and all its versions. Returns whether it existed.
    pub fn delete(&self, name: &str) -> Result<bool, StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM workers WHERE name = ?1", params![name])?;
        tx.execute("DELETE FROM versions WHERE name = ?1", params![name])?;
        tx.commit()?;
        Ok(n > 0)
    }
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
            modules: BTreeMap::from([("w.js".to_owned(), format!("// v{version}"))]),
            bindings: vec![],
            compatibility_date: None,
        }
    }

    #[test]
    fn versions_activate_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DeploymentStore::open(dir.path()).unwrap();
            assert_eq!(store.next_version("a").unwrap(), 1);
            store
                .insert_active(&script("a", 1), &["a.com/*".into()])
                .unwrap();
            store.insert_active(&script("a", 2), &[]).unwrap();
            assert_eq!(store.previous_version("a", 2).unwrap(), Some(1));
            store.activate("a", 1).unwrap();
        }
        let store = DeploymentStore::open(dir.path()).unwrap();
        let active = store.active_versions().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].script.version, 1);
        assert_eq!(active[0].routes, vec!["a.com/*".to_owned()]);
        assert_eq!(store.worker("a").unwrap().unwrap().versions, vec![1, 2]);
        assert!(store.delete("a").unwrap());
        assert!(store.active_versions().unwrap().is_empty());
        assert_eq!(store.next_version("a").unwrap(), 1);
    }
}
