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

    /// Records (Some) or removes (None) an object's alarm.
    pub fn set(&self, a: &ObjectAddress, at_ms: Option<u64>) -> Result<(), StateError> {
        let conn = self.conn();
        match at_ms {
            Some(at) => conn.execute(
                "INSERT OR REPLACE INTO alarms (worker, class, id, name, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.worker, a.class_name, a.id, a.name, at as i64],
            )?,
            None => conn.execute(
                "DELETE FROM alarms WHERE worker = ?1 AND class = ?2 AND id = ?3",
                params![a.worker, a.class_name, a.id],
            )?,
        };
        Ok(())
    }

    /// Every recorded alarm.
    pub fn all(&self) -> Result<Vec<(ObjectAddress, u64)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT worker, class, id, name, at FROM alarms")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ObjectAddress {
                    worker: r.get(0)?,
                    class_name: r.get(1)?,
                    id: r.get(2)?,
                    name: r.get(3)?,
                },
                r.get::<_, i64>(4)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
