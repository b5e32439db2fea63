//! The node's Durable Object index: `<data_dir>/do/alarms.db`.
//!
//! Alarms: one row per object with an alarm. It lets the directory wake objects
//! that hibernated (or a node that restarted) at their alarm time without a
//! timer per object; each object's own database holds its alarm too, written in
//! the same commit as the event that set it.
//!
//! Objects: one row per object whose database the node created, so that a
//! database found missing, empty or unreadable later is known to be damage
//! (`durable::check_existing`), never a brand-new object; and the objects found
//! damaged, which refuse events until an operator resets them.

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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                 storage TEXT NOT NULL, class TEXT NOT NULL, id TEXT NOT NULL,
                 damaged INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (storage, class, id)
             );",
        )?;
        // Storage ids (added with accounts; `fill_storage` completes old rows).
        let has_storage = conn.prepare("SELECT storage FROM alarms LIMIT 0").is_ok();
        if !has_storage {
            conn.execute_batch("ALTER TABLE alarms ADD COLUMN storage TEXT NOT NULL DEFAULT ''")?;
        }
        Ok(AlarmIndex {
            conn: Mutex::new(conn),
        })
    }

    /// Opens the index of `dir` (`<data_dir>/do`) after checking it. One that
    /// is missing while objects exist, or that is damaged, is set aside and
    /// rebuilt from the objects' own databases (`workers`: the `(name, storage
    /// id)` of every deployed worker). Returns whether it was rebuilt.
    pub fn open_checked(
        dir: &Path,
        workers: &[(String, String)],
    ) -> Result<(AlarmIndex, bool), StateError> {
        let path = dir.join("alarms.db");
        let has_objects = workers
            .iter()
            .any(|(_, storage)| dir.join(storage).is_dir());
        let verdict = if path.exists() {
            super::durable::check_database(&path, &["alarms"])
        } else if has_objects {
            Err("it is missing while Durable Objects exist".into())
        } else {
            Ok(())
        };
        if let Err(why) = verdict {
            tracing::error!(
                "the Durable Object alarm index is damaged ({why}); rebuilding it from the objects"
            );
            if path.exists() {
                let aside = dir.join(format!(
                    "alarms.db.damaged-{}",
                    super::deployments::now_secs()
                ));
                std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.join(format!("alarms.db{suffix}")));
                }
            }
            let index = AlarmIndex::open(dir)?;
            index.rebuild(dir, workers)?;
            return Ok((index, true));
        }
        Ok((AlarmIndex::open(dir)?, false))
    }

    /// Fills a fresh index from the objects' databases: every object found,
    /// and the alarm each holds.
    fn rebuild(&self, dir: &Path, workers: &[(String, String)]) -> Result<(), StateError> {
        let (mut objects, mut alarms) = (0, 0);
        for (worker, storage) in workers {
            let Ok(classes) = std::fs::read_dir(dir.join(storage)) else {
                continue;
            };
            for class in classes.flatten() {
                let class_name = class.file_name().to_string_lossy().into_owned();
                if super::names::check_class(&class_name).is_err() {
                    continue;
                }
                let Ok(files) = std::fs::read_dir(class.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let name = file.file_name().to_string_lossy().into_owned();
                    let Some(id) = name.strip_suffix(".db") else {
                        continue;
                    };
                    if super::names::check_object_id(id).is_err() {
                        continue;
                    }
                    let address = ObjectAddress {
                        worker: worker.clone(),
                        storage: storage.clone(),
                        class_name: class_name.clone(),
                        id: id.to_owned(),
                        name: None,
                    };
                    if super::durable::check_existing(&file.path()).is_err() {
                        // Found damaged: it refuses events, as it would have.
                        self.mark_damaged(&address)?;
                        continue;
                    }
                    self.record_object(&address)?;
                    objects += 1;
                    let at: Option<i64> = Connection::open_with_flags(
                        file.path(),
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )
                    .and_then(|c| {
                        use rusqlite::OptionalExtension;
                        c.query_row("SELECT at FROM _edged_alarm WHERE one = 0", [], |r| {
                            r.get(0)
                        })
                        .optional()
                    })
                    .unwrap_or(None);
                    if let Some(at) = at {
                        self.set(&address, Some(at.max(0) as u64))?;
                        alarms += 1;
                    }
                }
            }
        }
        tracing::warn!(
            objects,
            alarms,
            "the Durable Object index was rebuilt from the objects"
        );
        Ok(())
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

    /// Forgets every alarm and object under `storage` (their worker was
    /// deleted).
    pub fn purge_storage(&self, storage: &str) -> Result<usize, StateError> {
        let conn = self.conn();
        conn.execute("DELETE FROM objects WHERE storage = ?1", params![storage])?;
        Ok(conn.execute("DELETE FROM alarms WHERE storage = ?1", params![storage])?)
    }

    /// Whether the node created this object's database (`Some(damaged)`).
    pub fn object(&self, a: &ObjectAddress) -> Result<Option<bool>, StateError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row(
                "SELECT damaged FROM objects WHERE storage = ?1 AND class = ?2 AND id = ?3",
                params![a.storage, a.class_name, a.id],
                |r| r.get::<_, i64>(0).map(|d| d != 0),
            )
            .optional()?)
    }

    /// Records that the object's database exists (made, or found whole).
    pub fn record_object(&self, a: &ObjectAddress) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO objects (storage, class, id) VALUES (?1, ?2, ?3)",
            params![a.storage, a.class_name, a.id],
        )?;
        Ok(())
    }

    /// Marks the object damaged: it refuses events until it is forgotten.
    pub fn mark_damaged(&self, a: &ObjectAddress) -> Result<(), StateError> {
        self.conn().execute(
            "INSERT INTO objects (storage, class, id, damaged) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT DO UPDATE SET damaged = 1",
            params![a.storage, a.class_name, a.id],
        )?;
        Ok(())
    }

    /// Forgets the object (an operator reset it): its next event starts empty.
    pub fn forget_object(&self, a: &ObjectAddress) -> Result<(), StateError> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM objects WHERE storage = ?1 AND class = ?2 AND id = ?3",
            params![a.storage, a.class_name, a.id],
        )?;
        conn.execute(
            "DELETE FROM alarms WHERE storage = ?1 AND class = ?2 AND id = ?3",
            params![a.storage, a.class_name, a.id],
        )?;
        Ok(())
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
