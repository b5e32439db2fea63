//! One Durable Object's storage: `<data_dir>/do/<worker>/<class>/<id>.db`.
//!
//! Design. The object's isolate writes into an in-memory *pending* layer; reads
//! look at pending, then at the *committing* layer (handed to a commit, not yet
//! durable), then at SQLite. The object's actor decides when a commit happens
//! (`take_batch` → [`commit`] on a blocking thread → `commit_done`): one
//! transaction covers every write made since the last one, however many events
//! made them (group commit), and responses wait for it (the output gate).
//! `transaction()` snapshots the pending layer and restores it on rollback.
//!
//! Two SQLite connections (WAL): the reader stays on the isolate's thread, the
//! writer moves to the blocking pool for commits, so reads never wait for an
//! fsync.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::error::StateError;
use crate::js::durable::{DoError, ListOptions, ObjectStorage, SqlResult, SqlValue};

/// Workers' limits on one SQL statement.
pub const MAX_SQL_BYTES: usize = super::sql_sandbox::MAX_SQL_BYTES as usize;
pub const MAX_SQL_BINDINGS: usize = super::sql_sandbox::MAX_BINDINGS as usize;

fn to_sql(v: &SqlValue) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(*i),
        SqlValue::Real(f) => Value::Real(*f),
        SqlValue::Text(t) => Value::Text(t.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn from_sql(v: rusqlite::types::ValueRef<'_>) -> SqlValue {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(f) => SqlValue::Real(f),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

/// The most one SQL statement may return (rows are read eagerly, and the
/// isolate could not hold more than its memory limit anyway).
pub const MAX_SQL_RESULT_BYTES: usize = 64 << 20;

fn sql_value_size(v: &SqlValue) -> usize {
    16 + match v {
        SqlValue::Text(t) => t.len(),
        SqlValue::Blob(b) => b.len(),
        _ => 0,
    }
}

/// Workers' limit on one key plus its value.
pub const MAX_ENTRY_BYTES: usize = 2 << 20;

/// Writes in key order; `None` deletes.
pub type Batch = BTreeMap<String, Option<Vec<u8>>>;

/// What one commit writes: key writes and, if it changed, the alarm.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    pub writes: Batch,
    /// `Some(None)`: the alarm was deleted; `Some(Some(ms))`: set.
    pub alarm: Option<Option<u64>>,
    /// SQL statements wrote inside the writer's open transaction; the commit
    /// ends that transaction along with the key-value writes.
    pub sql: bool,
    /// Replicated: the log needs a shipment (its base image) even without writes.
    pub ship: bool,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.alarm.is_none() && !self.sql && !self.ship
    }
}

pub struct ObjectStore {
    reader: Connection,
    writer: Arc<Mutex<Connection>>,
    pending: RefCell<Commit>,
    committing: RefCell<Commit>,
    transactions: RefCell<Vec<Commit>>,
    /// The per-object size cap, in bytes.
    max_bytes: u64,
    /// The database's size after the last commit, plus bytes written since.
    size: std::cell::Cell<u64>,
    /// The size last added to the node's storage-bytes gauge.
    counted: std::cell::Cell<u64>,
    /// Set while a commit that ends the writer's open SQL transaction is in
    /// flight: SQL must not start new work in that transaction meanwhile.
    sql_handoff: Arc<std::sync::atomic::AtomicBool>,
    /// Open `blockConcurrencyWhile` calls.
    blocked: std::cell::Cell<u32>,
    /// Outgoing messages waiting for the writes made before them (the output
    /// gate); answered by the end of the next commit.
    flush_waiters: RefCell<Vec<FlushWaiter>>,
    /// The object's actor, woken when it has something to do that no event
    /// outcome tells it: writes made, the gate opened, a flush requested.
    actor: RefCell<Option<std::task::Waker>>,
    /// Why the object must reset, when its code asked for it.
    reset: RefCell<Option<String>>,
    /// Why the SQL sandbox refused the last tenant statement.
    refusal: super::sql_sandbox::Refusal,
    /// In a cluster: captures each commit for the object's log.
    shipper: Option<Arc<Mutex<super::replica::Shipper>>>,
}

/// Told when the writes it waits for are durable, or why they are not.
pub type FlushWaiter = futures::channel::oneshot::Sender<Result<(), String>>;

/// Bytes of every object database on this node (a gauge moved by each object's
/// size changes; seeded at start from the files on disk).
pub const STORAGE_BYTES: &str = "edged_do_storage_bytes";

/// Moves the object storage of workers stored before storage ids existed from
/// `do/<worker name>/` to `do/<storage id>/`, and gives their alarms the id
/// (`adopted`: the `(name, storage id)` pairs the deployment store assigned).
pub fn adopt_legacy_storage(
    data_dir: &Path,
    adopted: &[(String, String)],
) -> Result<(), StateError> {
    if adopted.is_empty() {
        return Ok(());
    }
    let root = super::names::objects_dir(data_dir);
    for (name, storage) in adopted {
        // Worker names were always `[a-z0-9-]`, so the old path is safe to name.
        if super::names::check_worker(name).is_err() {
            continue;
        }
        let old = root.join(name);
        let new = super::names::worker_objects_dir(data_dir, storage)
            .map_err(|e| StateError::Invalid(e.0))?;
        if old.is_dir() && !new.exists() {
            std::fs::rename(&old, &new).map_err(|source| StateError::Io { path: old, source })?;
            tracing::info!(worker = %name, "moved Durable Object storage under its storage id");
        }
    }
    if root.join("alarms.db").exists() {
        super::alarms::AlarmIndex::open(&root)?.fill_storage(adopted)?;
    }
    Ok(())
}

/// The size of every object database under `do_dir` (for [`STORAGE_BYTES`]).
pub fn stored_bytes(do_dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk(&path)
                } else if path.extension().is_some_and(|x| x == "db")
                    && path.file_name().is_some_and(|n| n != "alarms.db")
                {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                } else {
                    0
                }
            })
            .sum()
    }
    walk(do_dir)
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        self.refresh_size();
        // An object leaving memory (hibernation, eviction, reset) leaves its
        // database whole and its WAL empty: checkpointed and truncated, off the
        // isolate thread.
        let writer = self.writer.clone();
        // A replicated database changes only by shipped commits: no vacuum
        // (its pages would be in no record), only the checkpoint.
        let vacuum = if self.shipper.is_some() {
            ""
        } else {
            "PRAGMA incremental_vacuum;"
        };
        let checkpoint = move || {
            let conn = match writer.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            if conn.is_autocommit() {
                let _ = conn.execute_batch(&format!("{vacuum} PRAGMA wal_checkpoint(TRUNCATE);"));
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(checkpoint);
            }
            Err(_) => checkpoint(),
        }
    }
}

/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Checks, before anything opens it, that the database of an object the node
/// knows exists is still there and whole: a missing or empty file, a file
/// that is not a database, a write-ahead log that is not one, or a database
/// without the runtime's tables is damage, never a new empty object.
pub fn check_existing(path: &Path) -> Result<(), StateError> {
    check_database(path, &["_edged_kv", "_edged_alarm"])
        .map_err(|what| StateError::Damaged(format!("Durable Object storage is damaged: {what}")))
}

/// Whether `path` is a whole SQLite database with `tables`: `Err` says what
/// is wrong. Cheap (headers and the schema, not every page), so it runs
/// before opening and at start.
pub fn check_database(path: &Path, tables: &[&str]) -> Result<(), String> {
    use std::io::Read;
    let mut header = [0u8; 16];
    match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("its database file is missing".into())
        }
        Err(e) => return Err(format!("its database file cannot be read ({})", e.kind())),
        Ok(mut f) => {
            if f.read_exact(&mut header).is_err() {
                return Err("its database file is empty or truncated".into());
            }
        }
    }
    if &header != SQLITE_HEADER {
        return Err("its database file is not a database".into());
    }
    let mut wal_name = path.as_os_str().to_owned();
    wal_name.push("-wal");
    if let Ok(mut f) = std::fs::File::open(std::path::PathBuf::from(wal_name)) {
        let mut magic = [0u8; 4];
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            let ok = f.read_exact(&mut magic).is_ok()
                && matches!(u32::from_be_bytes(magic), 0x377f_0682 | 0x377f_0683);
            if !ok {
                return Err("its write-ahead log is not one".into());
            }
        }
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|_| "its database cannot be opened".to_owned())?;
    for table in tables {
        let found: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                params![table],
                |r| r.get(0),
            )
            .map_err(|_| "its database cannot be read".to_owned())?;
        if found != 1 {
            return Err(format!("its database has lost its '{table}' table"));
        }
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StateError> {
    let conn = Connection::open(path)?;
    super::sql_sandbox::harden(&conn)?;
    // Disk stays close to the data: freed pages go back (incremental vacuum,
    // for databases made from now on) and the WAL is truncated when the
    // object closes (`Drop`). Not at every checkpoint: a WAL that must grow
    // again makes each commit's fsync write file metadata too (measured:
    // -17% increments/s on one object), so the size limit only trims a WAL
    // that grew past its usual ~4 MiB.
    conn.execute_batch(
        "PRAGMA auto_vacuum=INCREMENTAL;
         PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA journal_size_limit=16777216;
         CREATE TABLE IF NOT EXISTS _edged_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS _edged_alarm (one INTEGER PRIMARY KEY CHECK (one = 0), at INTEGER NOT NULL);",
    )?;
    Ok(conn)
}

fn failed(e: impl std::fmt::Display) -> DoError {
    tracing::error!(error = %e, "Durable Object storage failure");
    DoError::Failed(format!("Durable Object storage failure: {e}"))
}

impl ObjectStore {
    /// Opens (or creates) the object's database, capped at `max_bytes`.
    /// `known`: the node's object index says the object exists, so its
    /// database must be whole (see [`check_existing`]). `replicated`: in a
    /// cluster, whether the object's log holds a base image of this database
    /// (`Some(false)`: the first commit ships one); each commit then captures
    /// what it wrote ([`super::replica::Shipper`]).
    pub fn open(
        path: &Path,
        max_bytes: u64,
        known: bool,
        replicated: Option<bool>,
    ) -> Result<Self, StateError> {
        if known {
            check_existing(path)?;
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let existed = path.exists();
        let writer = open_connection(path)?;
        // SQLite itself refuses to grow the file past the cap (SQL writes fail
        // with "database or disk is full"); key-value writes are checked before.
        let page_size: i64 = writer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let max_pages = (max_bytes / page_size.max(512) as u64).clamp(1, i64::MAX as u64);
        writer.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |_| {
            Ok(())
        })?;
        let shipper = match replicated {
            Some(has_base) => Some(Arc::new(Mutex::new(super::replica::Shipper::new(
                path, &writer, has_base,
            )?))),
            None => None,
        };
        // A log without a base image gets one with the first commit.
        let ship = replicated == Some(false);
        let reader = open_connection(path)?;
        let store = ObjectStore {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            pending: RefCell::new(Commit {
                ship,
                ..Default::default()
            }),
            committing: RefCell::new(Commit::default()),
            transactions: RefCell::new(Vec::new()),
            max_bytes,
            size: std::cell::Cell::new(0),
            counted: std::cell::Cell::new(0),
            sql_handoff: Arc::default(),
            blocked: std::cell::Cell::new(0),
            flush_waiters: RefCell::new(Vec::new()),
            actor: RefCell::new(None),
            reset: RefCell::new(None),
            refusal: Default::default(),
            shipper,
        };
        let on_disk = store.file_size();
        store.size.set(on_disk);
        // A database that was on disk at node start is in the gauge already.
        store.counted.set(if existed { on_disk } else { 0 });
        store.refresh_size();
        Ok(store)
    }

    fn file_size(&self) -> u64 {
        self.pages().map(|(total, _)| total).unwrap_or(0)
    }

    /// The database's size in bytes and its page size.
    fn pages(&self) -> rusqlite::Result<(u64, u64)> {
        self.reader.query_row(
            "SELECT page_count * page_size, page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                ))
            },
        )
    }

    /// Re-reads the database size (after a commit) and moves the node's
    /// storage-bytes gauge by the change since it was last counted.
    pub fn refresh_size(&self) {
        let now = self.file_size();
        self.size.set(now);
        let before = self.counted.replace(now);
        if now >= before {
            metrics::gauge!(STORAGE_BYTES).increment((now - before) as f64);
        } else {
            metrics::gauge!(STORAGE_BYTES).decrement((before - now) as f64);
        }
    }

    /// Refuses a write of `adding` bytes that would take the object past its cap.
    fn check_size(&self, adding: u64) -> Result<(), DoError> {
        let after = self.size.get().saturating_add(adding);
        if after > self.max_bytes {
            return Err(DoError::Failed(format!(
                "Durable Object storage limit exceeded: the object would hold {after} bytes, over its limit of {} bytes",
                self.max_bytes
            )));
        }
        self.size.set(after);
        Ok(())
    }

    /// Moves the pending writes into the committing layer and returns them for
    /// [`commit`]. Call only when no commit is in flight.
    pub fn take_batch(&self) -> Commit {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        *self.committing.borrow_mut() = batch.clone();
        if batch.sql {
            self.sql_handoff
                .store(true, std::sync::atomic::Ordering::Release);
        }
        batch
    }

    /// Registers the waker of the object's actor (see [`ObjectStore::wake`]).
    pub fn set_waker(&self, waker: &std::task::Waker) {
        let mut slot = self.actor.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Tells the object's actor to look again (pump its queue, maybe commit).
    pub fn wake(&self) {
        if let Some(w) = self.actor.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Why the object must reset, if its code asked for it (taken once).
    pub fn take_reset(&self) -> Option<String> {
        self.reset.borrow_mut().take()
    }

    /// Outgoing messages wait for a commit: it is due now, even mid-event.
    pub fn flush_wanted(&self) -> bool {
        !self.flush_waiters.borrow().is_empty()
    }

    /// The waiters the batch just taken answers (call right after `take_batch`).
    pub fn take_flush_waiters(&self) -> Vec<FlushWaiter> {
        std::mem::take(&mut *self.flush_waiters.borrow_mut())
    }

    /// Writes (or SQL) not yet handed to a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// Inside `transaction()` / `transactionSync()`: a commit now would make
    /// half of it durable (and end its SQL savepoint), so commits wait.
    pub fn in_transaction(&self) -> bool {
        !self.transactions.borrow().is_empty()
    }

    /// Whether the input gate must stay shut: a `blockConcurrencyWhile` or a
    /// `transaction()` is open (an event let in now would see, or be rolled back
    /// with, its half-done work).
    pub fn holds_events(&self) -> bool {
        self.blocked.get() > 0 || self.in_transaction()
    }

    /// The flag [`commit`] clears once the handed-off SQL transaction has ended.
    pub fn sql_handoff(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.sql_handoff.clone()
    }

    /// The writer, once any commit that owns its open transaction is done, with
    /// a write transaction open (SQL writes then join the next commit).
    fn writer_in_transaction(&self) -> Result<std::sync::MutexGuard<'_, Connection>, DoError> {
        loop {
            let conn = match self.writer.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            if !self.sql_handoff.load(std::sync::atomic::Ordering::Acquire) {
                if conn.is_autocommit() {
                    conn.execute_batch("BEGIN IMMEDIATE").map_err(failed)?;
                }
                self.pending.borrow_mut().sql = true;
                self.wake();
                return Ok(conn);
            }
            // The commit thread has not taken the transaction yet: let it.
            drop(conn);
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// The batch from `take_batch` is durable (or failed and the object resets).
    pub fn commit_done(&self) {
        *self.committing.borrow_mut() = Commit::default();
        self.refresh_size();
    }

    pub fn writer(&self) -> Arc<Mutex<Connection>> {
        self.writer.clone()
    }

    /// In a cluster: what captures each commit for the object's log.
    pub fn shipper(&self) -> Option<Arc<Mutex<super::replica::Shipper>>> {
        self.shipper.clone()
    }

    fn overlay(&self, key: &str) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.pending.borrow().writes.get(key) {
            return Some(v.clone());
        }
        self.committing.borrow().writes.get(key).cloned()
    }

    fn write(&self, key: &str, value: Option<Vec<u8>>) {
        self.wake();
        self.pending
            .borrow_mut()
            .writes
            .insert(key.to_owned(), value);
    }
}

/// Writes a batch in one transaction and waits until it is on disk. Blocking.
/// SQL the object ran since the last commit is already in the writer's open
/// transaction; this commits it together with the key-value writes and clears
/// `handoff`. With a `shipper` (cluster), returns what the commit wrote, for
/// the object's log, captured under the writer's lock.
pub fn commit(
    writer: &Mutex<Connection>,
    batch: &Commit,
    handoff: &std::sync::atomic::AtomicBool,
    shipper: Option<&Mutex<super::replica::Shipper>>,
) -> Result<Option<super::replica::Pages>, StateError> {
    let conn = match writer.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    let result = write_batch(&conn, batch);
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let shipped = match (result, shipper) {
        (Ok(()), Some(s)) => {
            let mut s = match s.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            s.capture(&conn)
        }
        (Ok(()), None) => Ok(None),
        (Err(e), _) => Err(e),
    };
    handoff.store(false, std::sync::atomic::Ordering::Release);
    shipped
}

fn write_batch(conn: &Connection, batch: &Commit) -> Result<(), StateError> {
    if conn.is_autocommit() {
        conn.execute_batch("BEGIN IMMEDIATE")?;
    }
    {
        let mut put =
            conn.prepare_cached("INSERT OR REPLACE INTO _edged_kv (key, value) VALUES (?1, ?2)")?;
        let mut del = conn.prepare_cached("DELETE FROM _edged_kv WHERE key = ?1")?;
        for (k, v) in &batch.writes {
            match v {
                Some(v) => put.execute(params![k, v])?,
                None => del.execute(params![k])?,
            };
        }
        match batch.alarm {
            Some(Some(at)) => {
                conn.execute(
                    "INSERT OR REPLACE INTO _edged_alarm (one, at) VALUES (0, ?1)",
                    params![at as i64],
                )?;
            }
            Some(None) => {
                conn.execute("DELETE FROM _edged_alarm", [])?;
            }
            None => {}
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn in_range(key: &str, o: &ListOptions) -> bool {
    o.start.as_deref().is_none_or(|s| key >= s)
        && o.start_after.as_deref().is_none_or(|s| key > s)
        && o.end.as_deref().is_none_or(|e| key < e)
        && o.prefix.as_deref().is_none_or(|p| key.starts_with(p))
}

impl ObjectStorage for ObjectStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, DoError> {
        if let Some(v) = self.overlay(key) {
            return Ok(v);
        }
        self.reader
            .query_row(
                "SELECT value FROM _edged_kv WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), DoError> {
        let size = key.len() + value.len();
        if size > MAX_ENTRY_BYTES {
            return Err(DoError::Range(format!(
                "Durable Object storage: key and value of {size} bytes exceed the limit of {MAX_ENTRY_BYTES} bytes"
            )));
        }
        self.check_size(size as u64)?;
        self.write(key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool, DoError> {
        let existed = self.get(key)?.is_some();
        self.write(key, None);
        Ok(existed)
    }

    fn list(&self, o: &ListOptions) -> Result<Vec<(String, Vec<u8>)>, DoError> {
        // Everything the overlays say about the range, then SQLite's rows for keys
        // the overlays do not mention.
        let mut merged: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for layer in [&self.committing, &self.pending] {
            for (k, v) in layer.borrow().writes.iter() {
                if in_range(k, o) {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        let tombstones = merged.values().filter(|v| v.is_none()).count();
        let limit = o.limit.map(|l| l + tombstones);
        let lower = match (&o.start, &o.start_after, &o.prefix) {
            (_, Some(a), _) => Bound::Excluded(a.clone()),
            (Some(s), _, _) => Bound::Included(s.clone()),
            (_, _, Some(p)) => Bound::Included(p.clone()),
            _ => Bound::Unbounded,
        };
        let (lo_sql, lo) = match &lower {
            Bound::Included(k) => ("key >= ?1", k.clone()),
            Bound::Excluded(k) => ("key > ?1", k.clone()),
            Bound::Unbounded => ("?1 = ?1", String::new()),
        };
        let order = if o.reverse { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT key, value FROM _edged_kv WHERE {lo_sql} AND (?2 IS NULL OR key < ?2)
             AND (?3 IS NULL OR substr(key, 1, length(?3)) = ?3) ORDER BY key {order} LIMIT ?4"
        );
        let mut stmt = self.reader.prepare_cached(&sql).map_err(failed)?;
        let rows = stmt
            .query_map(
                params![lo, o.end, o.prefix, limit.map(|l| l as i64).unwrap_or(-1)],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(failed)?;
        for row in rows {
            let (k, v) = row.map_err(failed)?;
            if in_range(&k, o) {
                merged.entry(k).or_insert(Some(v));
            }
        }
        let live = merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
        let out: Vec<_> = if o.reverse {
            live.rev().take(o.limit.unwrap_or(usize::MAX)).collect()
        } else {
            live.take(o.limit.unwrap_or(usize::MAX)).collect()
        };
        Ok(out)
    }

    fn delete_all(&self) -> Result<(), DoError> {
        for (k, _) in self.list(&ListOptions::default())? {
            self.write(&k, None);
        }
        Ok(())
    }

    fn transaction_begin(&self) -> Result<(), DoError> {
        // SQL inside the transaction rolls back with it: a savepoint in the
        // writer's open transaction.
        let depth = self.transactions.borrow().len();
        let conn = self.writer_in_transaction()?;
        conn.execute_batch(&format!("SAVEPOINT edged_txn_{depth}"))
            .map_err(failed)?;
        drop(conn);
        let snapshot = self.pending.borrow().clone();
        self.transactions.borrow_mut().push(snapshot);
        Ok(())
    }

    fn transaction_commit(&self) -> Result<(), DoError> {
        self.wake();
        if self.transactions.borrow_mut().pop().is_some() {
            let depth = self.transactions.borrow().len();
            let conn = self.writer_in_transaction()?;
            conn.execute_batch(&format!("RELEASE edged_txn_{depth}"))
                .map_err(failed)?;
        }
        Ok(())
    }

    fn transaction_rollback(&self) -> Result<(), DoError> {
        self.wake();
        let snapshot = self.transactions.borrow_mut().pop();
        if let Some(snapshot) = snapshot {
            let depth = self.transactions.borrow().len();
            let conn = self.writer_in_transaction()?;
            conn.execute_batch(&format!(
                "ROLLBACK TO edged_txn_{depth}; RELEASE edged_txn_{depth}"
            ))
            .map_err(failed)?;
            drop(conn);
            // The snapshot predates the savepoint: keep its SQL flag set so the
            // open transaction still gets committed (or rolled back) later.
            *self.pending.borrow_mut() = Commit {
                sql: true,
                ..snapshot
            };
        }
        Ok(())
    }

    fn get_alarm(&self) -> Result<Option<u64>, DoError> {
        if let Some(a) = self.pending.borrow().alarm {
            return Ok(a);
        }
        if let Some(a) = self.committing.borrow().alarm {
            return Ok(a);
        }
        self.reader
            .query_row("SELECT at FROM _edged_alarm WHERE one = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|a| a.map(|a| a as u64))
            .map_err(failed)
    }

    fn set_alarm(&self, at_ms: Option<u64>) -> Result<(), DoError> {
        self.wake();
        self.pending.borrow_mut().alarm = Some(at_ms);
        Ok(())
    }

    /// Runs on the writer connection inside its open write transaction, which
    /// the next commit ends together with the key-value writes (so SQL writes
    /// pass the output gate and roll back with `transaction()`). The runtime's
    /// own tables (`_edged_*`) are out of reach.
    fn sql_exec(&self, query: &str, bindings: Vec<SqlValue>) -> Result<SqlResult, DoError> {
        if query.len() > MAX_SQL_BYTES {
            return Err(DoError::Range(format!(
                "SQL statement of {} bytes exceeds the limit of {MAX_SQL_BYTES} bytes",
                query.len()
            )));
        }
        if bindings.len() > MAX_SQL_BINDINGS {
            return Err(DoError::Range(format!(
                "{} bound parameters exceed the limit of {MAX_SQL_BINDINGS}",
                bindings.len()
            )));
        }
        // Every statement runs in the writer's open transaction, so its writes
        // commit with the event's key-value writes (behind the output gate) and
        // roll back with transaction(). The sandbox's authorizer decides what
        // it may touch (`sql_sandbox.rs`).
        let conn = self.writer_in_transaction()?;
        let refusal = self.refusal.clone();
        let invalid = |e: rusqlite::Error| {
            let refused = refusal.lock().ok().and_then(|r| r.clone());
            match (refused, &e) {
                (Some(why), _) => DoError::Invalid(format!("{why}: SQLITE_AUTH")),
                (None, rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    DoError::Failed(
                        "SQL query interrupted: the request exceeded its CPU time limit".into(),
                    )
                }
                _ => DoError::Invalid(format!("SQL error: {e}")),
            }
        };
        let outcome = super::sql_sandbox::with_tenant_authorizer(&conn, &self.refusal, || {
            let mut stmt = conn.prepare(query).map_err(invalid)?;
            if stmt.parameter_count() != bindings.len() {
                return Err(DoError::Invalid(format!(
                    "the statement has {} parameters but {} values were bound",
                    stmt.parameter_count(),
                    bindings.len()
                )));
            }
            let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let values: Vec<rusqlite::types::Value> = bindings.iter().map(to_sql).collect();
            let mut rows = stmt
                .query(rusqlite::params_from_iter(values.iter()))
                .map_err(invalid)?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next().map_err(invalid)? {
                let mut r = Vec::with_capacity(columns.len());
                for i in 0..columns.len() {
                    let v = from_sql(row.get_ref(i).map_err(invalid)?);
                    bytes += sql_value_size(&v);
                    r.push(v);
                }
                out.push(r);
                // Rows are read eagerly: bound what one statement may return.
                if bytes > MAX_SQL_RESULT_BYTES {
                    return Err(DoError::Range(format!(
                        "SQL result of more than {} MiB: read it in parts (LIMIT and OFFSET, or a cursor column)",
                        MAX_SQL_RESULT_BYTES >> 20
                    )));
                }
            }
            drop(rows);
            let readonly = stmt.readonly();
            Ok((columns, out, readonly))
        });
        let (columns, out, readonly) = outcome?;
        let written = if readonly { 0 } else { conn.changes() };
        drop(conn);
        if !readonly {
            self.refresh_size();
        }
        Ok(SqlResult {
            columns,
            rows_read: out.len() as u64,
            rows: out,
            rows_written: written,
        })
    }

    /// `ctx.storage.sql.databaseSize` as Workers reports it: the file's
    /// pages less the three edged adds to every object (the root pages of
    /// its internal key-value and alarm tables, made when the object opens,
    /// and the first pointer-map page of `auto_vacuum`), so a new object is
    /// one page (4,096 bytes), as in Workers. Storage accounting uses the
    /// whole file (`file_size`).
    fn database_size(&self) -> Result<u64, DoError> {
        let (total, page) = self.pages().map_err(failed)?;
        Ok(total.saturating_sub(3 * page).max(page))
    }

    fn unflushed(&self) -> bool {
        !self.in_transaction() && (self.has_pending() || !self.committing.borrow().is_empty())
    }

    fn request_flush(&self) -> futures::channel::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.flush_waiters.borrow_mut().push(tx);
        self.wake();
        rx
    }

    fn request_reset(&self, reason: String) {
        *self.reset.borrow_mut() = Some(reason);
        self.wake();
    }

    fn block_concurrency(&self, on: bool) {
        self.wake();
        let n = self.blocked.get();
        self.blocked
            .set(if on { n + 1 } else { n.saturating_sub(1) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_commit_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let s = ObjectStore::open(&path, u64::MAX, false, None).unwrap();
        s.put("b", b"2".to_vec()).unwrap();
        s.put("a", b"1".to_vec()).unwrap();
        assert_eq!(s.get("a").unwrap(), Some(b"1".to_vec()));
        let batch = s.take_batch();
        assert_eq!(batch.writes.len(), 2);
        s.put("c", b"3".to_vec()).unwrap();
        assert_eq!(
            s.get("b").unwrap(),
            Some(b"2".to_vec()),
            "committing layer is visible"
        );
        commit(&s.writer(), &batch, &s.sql_handoff(), None).unwrap();
        s.commit_done();
        s.delete("a").unwrap();
        let keys: Vec<String> = s
            .list(&ListOptions::default())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["b", "c"]);
        let rev = ListOptions {
            reverse: true,
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(s.list(&rev).unwrap()[0].0, "c");
        // Uncommitted writes are gone after a reopen; committed ones stay.
        drop(s);
        let s = ObjectStore::open(&path, u64::MAX, false, None).unwrap();
        assert_eq!(s.get("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get("c").unwrap(), None);
    }

    #[test]
    fn transaction_rollback_restores_pending() {
        let dir = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(&dir.path().join("o.db"), u64::MAX, false, None).unwrap();
        s.put("keep", vec![1]).unwrap();
        s.transaction_begin().unwrap();
        s.put("drop", vec![2]).unwrap();
        s.delete("keep").unwrap();
        s.transaction_rollback().unwrap();
        assert_eq!(s.get("keep").unwrap(), Some(vec![1]));
        assert_eq!(s.get("drop").unwrap(), None);
        assert!(s.put("big", vec![0; MAX_ENTRY_BYTES]).is_err());
        assert!(s.put("ok", vec![0; MAX_ENTRY_BYTES - 2]).is_ok());
    }
}
