//! The origin store of one KV namespace: `<data_dir>/kv/<namespace>.db`.
//!
//! Keys are stored as BLOBs, so SQLite orders them by UTF-8 bytes, as Workers
//! lists them. There is no change log here: a standalone node needs none, and
//! in a cluster the engine's KV log is the one order every node applies
//! (`replica.rs`); `seq` is then the log sequence that wrote the key (0 on a
//! standalone node). WAL with `synchronous=FULL`: a `put` that returned is on
//! disk. Calls block: run them on a blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::super::error::StateError;
use crate::js::KvValue;

/// One write from the replicated log: its sequence, key and value (`None`:
/// a delete).
pub type Applied<'a> = (u64, &'a str, Option<KvValue>);

pub struct KvStore {
    conn: Mutex<Connection>,
}

/// One listed key.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedKey {
    pub name: String,
    pub expiration: Option<u64>,
    pub metadata: Option<String>,
}

impl KvStore {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let conn = Connection::open(path)?;
        // Disk stays close to the data: freed pages are returned (incremental
        // vacuum, for namespaces made from now on) and the purger truncates
        // the WAL (`compact`). The WAL is not cut back at every
        // checkpoint: a WAL that has to grow again makes every commit's fsync
        // also write file metadata (measured: -17% on Durable Object writes),
        // so the size limit only trims one that grew past its usual size.
        conn.execute_batch(
            "PRAGMA auto_vacuum=INCREMENTAL;
             PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA journal_size_limit=16777216;
             CREATE TABLE IF NOT EXISTS kv (
                 key BLOB PRIMARY KEY,
                 value BLOB NOT NULL,
                 metadata TEXT,
                 expiration INTEGER,
                 seq INTEGER NOT NULL
             ) WITHOUT ROWID;
             DROP TABLE IF EXISTS changes;",
        )?;
        Ok(KvStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// The live value of `key` at `now` (seconds), if any.
    pub fn get(&self, key: &str, now: u64) -> Result<Option<KvValue>, StateError> {
        let row = self
            .conn()
            .query_row(
                "SELECT value, metadata, expiration FROM kv
                 WHERE key = ?1 AND (expiration IS NULL OR expiration > ?2)",
                params![key.as_bytes(), now as i64],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(value, metadata, expiration)| KvValue {
            value: value.into(),
            metadata,
            expiration: expiration.map(|e| e as u64),
        }))
    }

    /// Writes (or overwrites) a key.
    pub fn put(&self, key: &str, value: &KvValue) -> Result<(), StateError> {
        self.apply(&[(0, key, Some(value.clone()))])
    }

    pub fn delete(&self, key: &str) -> Result<(), StateError> {
        self.apply(&[(0, key, None)])
    }

    /// Applies writes from the replicated log in their order, in one
    /// transaction: `Some` puts (its `seq` is the log's), `None` deletes.
    pub fn apply(&self, items: &[Applied<'_>]) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO kv (key, value, metadata, expiration, seq) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata,
                     expiration = excluded.expiration, seq = excluded.seq",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
            for (seq, key, value) in items {
                match value {
                    Some(v) => {
                        put.execute(params![
                            key.as_bytes(),
                            &v.value[..],
                            v.metadata,
                            v.expiration.map(|e| e as i64),
                            *seq as i64
                        ])?;
                    }
                    None => {
                        delete.execute(params![key.as_bytes()])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes every key (a snapshot replaces the namespace).
    pub fn clear(&self) -> Result<(), StateError> {
        self.conn().execute_batch("DELETE FROM kv;")?;
        Ok(())
    }

    /// Calls `f` with every live key and its value, in key order.
    pub fn for_each(
        &self,
        now: u64,
        mut f: impl FnMut(String, KvValue) -> Result<(), String>,
    ) -> Result<(), StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key, value, metadata, expiration FROM kv
             WHERE expiration IS NULL OR expiration > ?1 ORDER BY key",
        )?;
        let mut rows = stmt.query(params![now as i64])?;
        while let Some(r) = rows.next()? {
            let key: Vec<u8> = r.get(0)?;
            let value = KvValue {
                value: r.get::<_, Vec<u8>>(1)?.into(),
                metadata: r.get(2)?,
                expiration: r.get::<_, Option<i64>>(3)?.map(|e| e as u64),
            };
            f(String::from_utf8_lossy(&key).into_owned(), value).map_err(StateError::Invalid)?;
        }
        Ok(())
    }

    /// Up to `limit` live keys after `after` (exclusive) starting with `prefix`,
    /// in key order, and whether more follow.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
        now: u64,
    ) -> Result<(Vec<ListedKey>, bool), StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key, metadata, expiration FROM kv
             WHERE key >= ?1 AND substr(key, 1, ?2) = ?1 AND key > ?3
               AND (expiration IS NULL OR expiration > ?4)
             ORDER BY key LIMIT ?5",
        )?;
        let prefix_bytes = prefix.as_bytes();
        let rows = stmt.query_map(
            params![
                prefix_bytes,
                prefix_bytes.len() as i64,
                after.unwrap_or(&[]),
                now as i64,
                (limit + 1) as i64
            ],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            },
        )?;
        let mut keys = Vec::with_capacity(limit.min(1000));
        for row in rows {
            let (key, metadata, expiration) = row?;
            keys.push(ListedKey {
                name: String::from_utf8_lossy(&key).into_owned(),
                expiration: expiration.map(|e| e as u64),
                metadata,
            });
        }
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }

    /// Deletes expired keys; returns how many.
    pub fn purge_expired(&self, now: u64) -> Result<usize, StateError> {
        Ok(self.conn().execute(
            "DELETE FROM kv WHERE expiration IS NOT NULL AND expiration <= ?1",
            params![now as i64],
        )?)
    }

    /// Returns freed pages to the file system and the WAL back to nothing,
    /// so an idle namespace takes about its data's size.
    pub fn compact(&self) -> Result<(), StateError> {
        self.conn()
            .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// Bytes of keys and values stored.
    pub fn bytes_stored(&self) -> Result<u64, StateError> {
        let n: Option<i64> = self.conn().query_row(
            "SELECT SUM(length(key) + length(value) + IFNULL(length(metadata), 0)) FROM kv",
            [],
            |r| r.get(0),
        )?;
        Ok(n.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str, expiration: Option<u64>) -> KvValue {
        KvValue {
            value: s.as_bytes().to_vec().into(),
            metadata: None,
            expiration,
        }
    }

    #[test]
    fn expired_keys_are_never_returned_and_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(&dir.path().join("t.db")).unwrap();
        store.put("lives", &value("a", None)).unwrap();
        store.put("dies", &value("b", Some(100))).unwrap();
        assert_eq!(store.get("dies", 99).unwrap(), Some(value("b", Some(100))));
        assert_eq!(store.get("dies", 100).unwrap(), None);
        let (keys, more) = store.list("", None, 10, 100).unwrap();
        assert_eq!(
            keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            vec!["lives"]
        );
        assert!(!more);
        assert_eq!(store.purge_expired(100).unwrap(), 1);
        assert_eq!(store.get("dies", 0).unwrap(), None);
    }

    #[test]
    fn deletes_remove_and_puts_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(&dir.path().join("t.db")).unwrap();
        store.put("a", &value("1", None)).unwrap();
        store.put("a", &value("2", None)).unwrap();
        assert_eq!(store.get("a", 0).unwrap(), Some(value("2", None)));
        store.delete("a").unwrap();
        assert_eq!(store.get("a", 0).unwrap(), None);
        store.compact().unwrap();
    }
}
