//! The node's Durable Object alarm index: `<data_dir>/do/alarms.db`, one row per
//! object with an alarm. It lets the directory wake objects that hibernated (or
//! a node that restarted) at their alarm time without a timer per object; each
//! object's own database holds its alarm too, written in the same commit as the
//! event that set it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};

use super::error::StateError;
use crate::js::durable::ObjectAddress;

pub struct AlarmIndex {
    conn: Mutex<Connection>,
}

impl AlarmIndex {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(dir.join("alarms.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS alarms (
                 worker TEXT NOT NULL, class TEXT NOT NULL, id TEXT NOT NULL,
                 name TEXT, at INTEGER NOT NULL,
                 PRIMARY KEY (worker, class, id)
             );",
        )?;
        // Retry counts survive a restart (added after the first release: add the
        // column to indexes made before it).
        let has_retry = conn.prepare("SELECT retry FROM alarms LIMIT 0").is_ok();
        if !has_retry {
            conn.execute_batch("ALTER TABLE alarms ADD COLUMN retry INTEGER NOT NULL DEFAULT 0")?;
        }
        // Storage ids (added with accounts; `fill_storage` completes old rows).
        let has_storage = conn.prepare("SELECT storage FROM alarms LIMIT 0").is_ok();
        if !has_storage {
            conn.execute_batch("ALTER TABLE alarms ADD COLUMN storage TEXT NOT NULL DEFAULT ''")?;
        }
        Ok(AlarmIndex {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Records (Some) or removes (None) an object's alarm, as set by the object.
    pub fn set(&self, a: &ObjectAddress, at_ms: Option<u64>) -> Result<(), StateError> {
        self.set_retry(a, at_ms, 0)
    }

    /// Records an alarm with the number of retries already made (a retry is
    /// scheduled with its backoff time).
    pub fn set_retry(
        &self,
        a: &ObjectAddress,
        at_ms: Option<u64>,
        retry: u32,
    ) -> Result<(), StateError> {
        let conn = self.conn();
        match at_ms {
            Some(at) => conn.execute(
                "INSERT OR REPLACE INTO alarms (worker, class, id, name, at, retry, storage) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![a.worker, a.class_name, a.id, a.name, at as i64, retry, a.storage],
            )?,
            None => conn.execute(
                "DELETE FROM alarms WHERE worker = ?1 AND class = ?2 AND id = ?3",
                params![a.worker, a.class_name, a.id],
            )?,
        };
        Ok(())
    }

    /// Every recorded alarm: address, time, retries made.
    pub fn all(&self) -> Result<Vec<(ObjectAddress, u64, u32)>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT worker, class, id, name, at, retry, storage FROM alarms")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ObjectAddress {
                    worker: r.get(0)?,
                    storage: r.get(6)?,
                    class_name: r.get(1)?,
                    id: r.get(2)?,
                    name: r.get(3)?,
                },
                r.get::<_, i64>(4)? as u64,
                r.get::<_, u32>(5)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets every alarm of the objects under `storage` (their worker was
    /// deleted).
    pub fn purge_storage(&self, storage: &str) -> Result<usize, StateError> {
        Ok(self
            .conn()
            .execute("DELETE FROM alarms WHERE storage = ?1", params![storage])?)
    }

    /// Gives alarms recorded before storage ids existed the storage id their
    /// worker was given (`(worker, storage)` pairs).
    pub fn fill_storage(&self, adopted: &[(String, String)]) -> Result<(), StateError> {
        let conn = self.conn();
        for (worker, storage) in adopted {
            conn.execute(
                "UPDATE alarms SET storage = ?2 WHERE worker = ?1 AND storage = ''",
                params![worker, storage],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_survive_reopen_and_old_indexes_gain_the_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An index from before retry counts were kept.
        let old = Connection::open(dir.path().join("alarms.db")).expect("open");
        old.execute_batch(
            "CREATE TABLE alarms (worker TEXT NOT NULL, class TEXT NOT NULL, id TEXT NOT NULL,
             name TEXT, at INTEGER NOT NULL, PRIMARY KEY (worker, class, id));
             INSERT INTO alarms VALUES ('w', 'C', 'a', NULL, 5);",
        )
        .expect("old schema");
        drop(old);
        let index = AlarmIndex::open(dir.path()).expect("open");
        index
            .fill_storage(&[("w".into(), "s".into())])
            .expect("fill");
        let a = |id: &str| ObjectAddress {
            worker: "w".into(),
            storage: "s".into(),
            class_name: "C".into(),
            id: id.into(),
            name: None,
        };
        index.set_retry(&a("b"), Some(10), 3).expect("retry");
        drop(index);
        let mut all = AlarmIndex::open(dir.path())
            .expect("reopen")
            .all()
            .expect("all");
        all.sort_by(|x, y| x.0.id.cmp(&y.0.id));
        assert_eq!(all, vec![(a("a"), 5, 0), (a("b"), 10, 3)]);
    }
}
