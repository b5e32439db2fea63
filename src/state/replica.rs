//! The replicated form of a Durable Object's database: what the owner ships
//! for each commit, and how any node rebuilds the database from it.
//!
//! Unit. One group commit (one SQLite transaction on the object's writer) is
//! shipped as the **WAL frames** it appended: page images plus the database
//! size in pages after the commit. Pages are what SQLite itself wrote, so a
//! replay is deterministic and covers everything the file holds — key-value
//! rows, tenant tables and their DDL, the alarm row, the schema — with no SQL
//! re-executed. An **image** is the whole database file, page by page: the
//! first record of an object's log (its base), and later the snapshot after
//! which older records can be purged.
//!
//! Capture. Upstream SQLite has no API to read frames out of its WAL, so the
//! owner reads the `-wal` file after each commit, from where the last capture
//! ended (the Litestream way). That needs `wal_autocheckpoint=0` on the writer
//! and checkpoints only where this module takes them (after a capture, under
//! the writer's lock, so no frame is ever checkpointed away unread). A WAL that
//! SQLite restarted (new salts in its header) is read from its first frame.
//!
//! Records. One commit can be larger than one engine message, so it travels as
//! zero or more `Part` records then one `Commit` record; a restore applies a
//! commit only when its `Commit` record arrives, and drops parts that an
//! `Epoch` marker (a new owner) follows, so a commit cut in half by its
//! owner's death is never half-applied. Every record of a commit is appended
//! by one owner under the log's compare-and-set, so records of two owners never
//! interleave.
//!
//! Bounds. A tenant decides how much one commit writes, so nothing here holds
//! more than a bounded amount of it in memory: a commit whose frames exceed
//! [`MAX_COMMIT_BYTES`] is refused (the object resets and is rebuilt from its
//! log, so the oversized commit is dropped and nothing acknowledged is lost);
//! an image is a copy of the database file on disk (taken under the writer's
//! lock) read one record at a time as it ships; a restore writes an image's
//! parts straight to a file and buffers only a frame commit's parts, which
//! the writer bounded.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::StateError;

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
/// Page bytes per engine message (the engine's default limit is 1 MiB).
pub const RECORD_BYTES: usize = 512 << 10;
/// A WAL past this many bytes is checkpointed and truncated after a capture.
const WAL_CHECKPOINT_BYTES: u64 = 4 << 20;
/// The most one replicated commit may write (WAL frames, headers included).
/// Workers documents no per-transaction bound, but a node must not hold a
/// tenant's arbitrarily large transaction in memory while it ships.
pub const MAX_COMMIT_BYTES: u64 = 32 << 20;

const KIND_EPOCH: u8 = 1;
const KIND_PART: u8 = 2;
const KIND_COMMIT: u8 = 3;
/// The commit is a whole image: the database starts from an empty file.
const FLAG_IMAGE: u8 = 1;

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Pages written by one commit, in the order SQLite wrote them (a later
/// image of a page wins).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pages {
    pub page_size: u32,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    pub pages: Vec<(u32, Vec<u8>)>,
    /// A whole image (replaces everything before it).
    pub image: bool,
    /// An image's pages, read from this copy of the database file as they
    /// ship (`pages` is then empty).
    pub file: Option<std::sync::Arc<ImageCopy>>,
}

/// A copy of an object's database file taken for one image. Its name is
/// unlinked as soon as it is open, so the copy goes with the last shipment
/// holding it (or with the process) and two copies never share a name.
#[derive(Debug)]
pub struct ImageCopy(std::fs::File);

impl PartialEq for ImageCopy {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl Pages {
    pub fn bytes(&self) -> usize {
        match &self.file {
            Some(_) => self.db_pages as usize * self.page_size as usize,
            None => self.pages.iter().map(|(_, p)| p.len()).sum(),
        }
    }

    /// The records that carry this commit, made one at a time: parts of at
    /// most [`RECORD_BYTES`] of pages, the last one a `Commit`.
    pub fn records(&self) -> Records<'_> {
        let total = match &self.file {
            Some(_) => self.db_pages as usize,
            None => self.pages.len(),
        };
        let per = (RECORD_BYTES / self.page_size.max(512) as usize).max(1);
        Records {
            pages: self,
            per,
            chunks: total.div_ceil(per).max(1),
            next: 0,
        }
    }

    fn record(&self, kind: u8, chunk: &mut dyn Iterator<Item = (u32, &[u8])>, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + n * (4 + self.page_size as usize));
        out.push(kind);
        out.push(if self.image { FLAG_IMAGE } else { 0 });
        out.extend_from_slice(&self.page_size.to_be_bytes());
        out.extend_from_slice(&self.db_pages.to_be_bytes());
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for (pgno, page) in chunk {
            out.extend_from_slice(&pgno.to_be_bytes());
            out.extend_from_slice(page);
        }
        out
    }
}

/// The records of one shipment, produced as they are taken.
pub struct Records<'a> {
    pages: &'a Pages,
    per: usize,
    chunks: usize,
    next: usize,
}

impl Iterator for Records<'_> {
    type Item = Result<Vec<u8>, StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.chunks {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let p = self.pages;
        let kind = if i + 1 == self.chunks {
            KIND_COMMIT
        } else {
            KIND_PART
        };
        let start = i * self.per;
        let Some(copy) = &p.file else {
            let end = (start + self.per).min(p.pages.len());
            let chunk = &p.pages[start.min(end)..end];
            let mut it = chunk.iter().map(|(n, page)| (*n, page.as_slice()));
            return Some(Ok(p.record(kind, &mut it, chunk.len())));
        };
        let read = || -> Result<Vec<u8>, StateError> {
            use std::os::unix::fs::FileExt;
            let size = p.page_size as usize;
            let n = (p.db_pages as usize).saturating_sub(start).min(self.per);
            let mut buf = vec![0u8; n * size];
            copy.0
                .read_exact_at(&mut buf, (start * size) as u64)
                .map_err(|e| StateError::Invalid(format!("cannot read the object's image: {e}")))?;
            let mut it = buf
                .chunks(size)
                .enumerate()
                .map(|(k, page)| ((start + k + 1) as u32, page));
            Ok(p.record(kind, &mut it, n))
        };
        Some(read())
    }
}

/// The new owner's marker: the first record it appends.
pub fn epoch_record(node: &str, epoch: u64) -> Vec<u8> {
    let mut out = vec![KIND_EPOCH];
    out.extend_from_slice(
        serde_json::json!({ "node": node, "epoch": epoch })
            .to_string()
            .as_bytes(),
    );
    out
}

/// Where the owner's last capture ended in its WAL.
#[derive(Debug, Default, Clone)]
struct Cursor {
    salts: Option<(u32, u32)>,
    offset: u64,
}

/// The owner's side: capture each commit's frames (or an image) from its
/// database files. Used under the writer's lock only.
pub struct Shipper {
    db: PathBuf,
    wal: PathBuf,
    cursor: Cursor,
    /// The next shipment must be a whole image (the log has no base yet).
    image_due: bool,
    /// Bytes shipped since the last image (a new image is due past the
    /// database's size: a restore then reads at most about twice the size).
    since_image: u64,
}

fn checkpoint_truncate(conn: &rusqlite::Connection) -> Result<bool, StateError> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

impl Shipper {
    /// For the database at `db`, whose writer `conn` has just been opened.
    /// `has_base`: the object's log already holds an image this database was
    /// restored from.
    pub fn new(db: &Path, conn: &rusqlite::Connection, has_base: bool) -> Result<Self, StateError> {
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA synchronous=OFF;")?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let mut s = Shipper {
            db: db.to_owned(),
            wal: PathBuf::from(wal),
            cursor: Cursor::default(),
            image_due: !has_base,
            since_image: 0,
        };
        s.truncate(conn)?;
        Ok(s)
    }

    fn truncate(&mut self, conn: &rusqlite::Connection) -> Result<bool, StateError> {
        let done = checkpoint_truncate(conn)?;
        if done {
            self.cursor = Cursor::default();
        }
        Ok(done)
    }

    /// What the commit just made on `conn` (under its lock) ships: its frames,
    /// or a whole image when one is due; `None` when it wrote nothing.
    pub fn capture(&mut self, conn: &rusqlite::Connection) -> Result<Option<Pages>, StateError> {
        let db_size = std::fs::metadata(&self.db).map(|m| m.len()).unwrap_or(0);
        if !self.image_due && self.since_image > db_size.max(1 << 20) {
            self.image_due = true;
        }
        if self.image_due {
            // A reader between statements can hold the checkpoint back for a
            // moment (never long: reads do not span turns).
            let mut tries = 0;
            while !self.truncate(conn)? {
                tries += 1;
                if tries > 200 {
                    return Err(StateError::Invalid(
                        "cannot checkpoint the object's database for its snapshot".into(),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let image = self.copy_image()?;
            self.image_due = false;
            self.since_image = 0;
            return Ok(Some(image));
        }
        let pages = self.read_frames()?;
        if let Some(p) = &pages {
            self.since_image += p.bytes() as u64;
        }
        if self.cursor.offset > WAL_CHECKPOINT_BYTES {
            self.truncate(conn)?;
        }
        Ok(pages)
    }

    /// The database file (just checkpointed) as an image, read from a copy
    /// as it ships: later checkpoints change the file, not the copy.
    fn copy_image(&self) -> Result<Pages, StateError> {
        let path = self.db.with_extension("image");
        if let Err(e) = std::fs::copy(&self.db, &path) {
            let _ = std::fs::remove_file(&path);
            return Err(io(&path)(e));
        }
        let file = std::fs::File::open(&path).map_err(io(&path));
        let _ = std::fs::remove_file(&path);
        let file = file?;
        let (page_size, db_pages) = image_geometry(&file, &path)?;
        Ok(Pages {
            page_size,
            db_pages,
            pages: Vec::new(),
            image: true,
            file: Some(std::sync::Arc::new(ImageCopy(file))),
        })
    }

    /// The frames after the cursor, up to the last commit frame.
    fn read_frames(&mut self) -> Result<Option<Pages>, StateError> {
        let mut f = match std::fs::File::open(&self.wal) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.wal)(e)),
        };
        let mut header = [0u8; WAL_HEADER];
        if f.read_exact(&mut header).is_err() {
            return Ok(None);
        }
        let page_size = be32(&header[8..12]);
        let salts = (be32(&header[16..20]), be32(&header[20..24]));
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(StateError::Invalid(
                "the object's WAL has a bad header".into(),
            ));
        }
        if self.cursor.salts != Some(salts) || self.cursor.offset < WAL_HEADER as u64 {
            // A new WAL (or one SQLite restarted): read it from the start.
            self.cursor = Cursor {
                salts: Some(salts),
                offset: WAL_HEADER as u64,
            };
        }
        let pending = f
            .metadata()
            .map_err(io(&self.wal))?
            .len()
            .saturating_sub(self.cursor.offset);
        if pending > MAX_COMMIT_BYTES {
            return Err(StateError::Invalid(format!(
                "the transaction wrote {} MiB, over the {} MiB one replicated Durable Object commit may write",
                pending >> 20,
                MAX_COMMIT_BYTES >> 20
            )));
        }
        f.seek(SeekFrom::Start(self.cursor.offset))
            .map_err(io(&self.wal))?;
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).map_err(io(&self.wal))?;
        let frame = FRAME_HEADER + page_size as usize;
        // Several commits since the cursor merge into one shipment (the last
        // commit frame's size wins); frames after the last commit are not
        // part of any commit yet.
        let mut pages = Vec::new();
        let (mut committed, mut kept, mut db_pages) = (0usize, 0usize, 0u32);
        let mut at = 0usize;
        while at + frame <= rest.len() {
            let h = &rest[at..at + FRAME_HEADER];
            if (be32(&h[8..12]), be32(&h[12..16])) != salts {
                break;
            }
            pages.push((be32(&h[0..4]), rest[at + FRAME_HEADER..at + frame].to_vec()));
            at += frame;
            if be32(&h[4..8]) != 0 {
                committed = at;
                kept = pages.len();
                db_pages = be32(&h[4..8]);
            }
        }
        if committed == 0 {
            return Ok(None);
        }
        pages.truncate(kept);
        self.cursor.offset += committed as u64;
        Ok(Some(Pages {
            page_size,
            db_pages,
            pages,
            image: false,
            file: None,
        }))
    }
}

/// The page size and page count of a database file.
fn image_geometry(f: &std::fs::File, db: &Path) -> Result<(u32, u32), StateError> {
    use std::os::unix::fs::FileExt;
    let len = f.metadata().map_err(io(db))?.len();
    let mut header = [0u8; 100];
    if len < 100 || f.read_exact_at(&mut header, 0).is_err() {
        return Err(StateError::Invalid("the object's database is empty".into()));
    }
    // Bytes 16–17 of the header: the page size (1 means 65536).
    let raw = u16::from_be_bytes([header[16], header[17]]) as u32;
    let page_size = if raw == 1 { 65536 } else { raw };
    if !(512..=65536).contains(&page_size) || len % page_size as u64 != 0 {
        return Err(StateError::Invalid(
            "the object's database has a bad size".into(),
        ));
    }
    let pages = u32::try_from(len / page_size as u64)
        .map_err(|_| StateError::Invalid("the object's database is too large".into()))?;
    Ok((page_size, pages))
}

/// A database rebuilt from an object's log, record by record (a restore).
pub struct Rebuild {
    path: PathBuf,
    file: std::fs::File,
    /// Pages of the frame commit whose `Commit` record has not arrived yet
    /// (bounded: the writer refuses commits over [`MAX_COMMIT_BYTES`]).
    open: Vec<(u32, Vec<u8>)>,
    open_bytes: u64,
    /// The image being received, written straight to its own file (an image
    /// is as large as the database); it replaces `file` at its `Commit`.
    image: Option<(PathBuf, std::fs::File)>,
    /// An image has been applied (the file is a whole database).
    pub has_base: bool,
    pub bytes: u64,
}

fn bad_record() -> StateError {
    StateError::Invalid("malformed record in the object's log".into())
}

fn create(path: &Path) -> Result<std::fs::File, StateError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))
}

impl Rebuild {
    /// Starts an empty file at `path` (replacing any).
    pub fn create(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(Rebuild {
            path: path.to_owned(),
            file: create(path)?,
            open: Vec::new(),
            open_bytes: 0,
            image: None,
            has_base: false,
            bytes: 0,
        })
    }

    fn drop_open(&mut self) {
        self.open.clear();
        self.open_bytes = 0;
        if let Some((path, _)) = self.image.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Applies one record of the log.
    pub fn apply(&mut self, record: &[u8]) -> Result<(), StateError> {
        use std::os::unix::fs::FileExt;
        self.bytes += record.len() as u64;
        let (&kind, rest) = record.split_first().ok_or_else(bad_record)?;
        if kind == KIND_EPOCH {
            // A commit its owner did not finish: never applied.
            self.drop_open();
            return Ok(());
        }
        if rest.len() < 13 || !(kind == KIND_PART || kind == KIND_COMMIT) {
            return Err(bad_record());
        }
        let image = rest[0] & FLAG_IMAGE != 0;
        let page_size = be32(&rest[1..5]) as usize;
        let db_pages = be32(&rest[5..9]);
        let count = be32(&rest[9..13]) as usize;
        if !(512..=65536).contains(&page_size) {
            return Err(bad_record());
        }
        let body = &rest[13..];
        if body.len() != count * (4 + page_size) {
            return Err(bad_record());
        }
        let pages = body.chunks(4 + page_size).map(|c| (be32(&c[..4]), &c[4..]));
        if image {
            if !self.open.is_empty() {
                return Err(bad_record());
            }
            if self.image.is_none() {
                let path = self.path.with_extension("image-in");
                self.image = Some((path.clone(), create(&path)?));
            }
            let Some((path, file)) = &self.image else {
                return Err(bad_record());
            };
            for (pgno, page) in pages {
                if pgno == 0 {
                    return Err(bad_record());
                }
                file.write_all_at(page, (pgno as u64 - 1) * page_size as u64)
                    .map_err(io(path))?;
            }
            if kind == KIND_COMMIT {
                let Some((path, file)) = self.image.take() else {
                    return Err(bad_record());
                };
                file.set_len(db_pages as u64 * page_size as u64)
                    .map_err(io(&path))?;
                std::fs::rename(&path, &self.path).map_err(io(&path))?;
                self.file = file;
                self.has_base = true;
            }
            return Ok(());
        }
        if self.image.is_some() {
            return Err(bad_record());
        }
        self.open_bytes += body.len() as u64;
        if self.open_bytes > 2 * MAX_COMMIT_BYTES {
            return Err(StateError::Invalid(
                "a commit in the object's log is larger than any writer makes".into(),
            ));
        }
        self.open.extend(pages.map(|(n, p)| (n, p.to_vec())));
        if kind == KIND_COMMIT {
            for (pgno, page) in self.open.drain(..) {
                if pgno == 0 {
                    return Err(bad_record());
                }
                self.file
                    .write_all_at(&page, (pgno as u64 - 1) * page_size as u64)
                    .map_err(io(&self.path))?;
            }
            self.open_bytes = 0;
            self.file
                .set_len(db_pages as u64 * page_size as u64)
                .map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// Syncs the file; `true` when it holds a database (an image arrived).
    pub fn finish(mut self) -> Result<bool, StateError> {
        self.drop_open();
        self.file.sync_all().map_err(io(&self.path))?;
        Ok(self.has_base)
    }
}

impl Drop for Rebuild {
    /// An image still being received (a restore that failed) leaves no file.
    fn drop(&mut self) {
        self.drop_open();
    }
}

/// Puts a rebuilt database in place of the object's (its old WAL and shared
/// memory go: the rebuilt file is whole by itself). Without a base the object
/// is new: its database starts empty.
pub fn install(rebuilt: &Path, db: &Path, has_base: bool) -> Result<(), StateError> {
    for suffix in ["-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(db)(e)),
        }
    }
    if has_base {
        std::fs::rename(rebuilt, db).map_err(io(db))?;
    } else {
        let _ = std::fs::remove_file(rebuilt);
        match std::fs::remove_file(db) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(db)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn open(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        c
    }

    fn dump(path: &Path) -> Vec<(i64, String)> {
        let c = Connection::open(path).unwrap();
        let mut s = c.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn frames_and_images_rebuild_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o.db");
        let conn = open(&db);
        let mut shipper = Shipper::new(&db, &conn, false).unwrap();
        let mut log: Vec<Vec<u8>> = vec![epoch_record("a", 1)];
        let mut images = 0;
        for i in 0..400i64 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            conn.execute(
                "INSERT OR REPLACE INTO t (k, v) VALUES (?1, ?2)",
                rusqlite::params![i % 97, "x".repeat((i as usize * 37) % 5000)],
            )
            .unwrap();
            if i % 50 == 0 {
                conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS t{i} (a)"))
                    .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
            if let Some(p) = shipper.capture(&conn).unwrap() {
                assert!(p.image || i > 0, "the first shipment is the base image");
                images += p.image as u32;
                log.extend(p.records().map(Result::unwrap));
            }
            if i == 200 {
                // A commit its owner never finished, then a new owner.
                let half = Pages {
                    page_size: 4096,
                    db_pages: 1,
                    pages: vec![(1, vec![0; 4096])],
                    image: true,
                    file: None,
                };
                let mut part = half.records().next().unwrap().unwrap();
                part[0] = KIND_PART;
                log.push(part);
                log.push(epoch_record("b", 2));
            }
        }
        assert!(
            images > 1,
            "a snapshot image once the log outgrew the database"
        );
        let rebuilt = dir.path().join("r.db");
        let mut r = Rebuild::create(&rebuilt).unwrap();
        for rec in &log {
            r.apply(rec).unwrap();
        }
        assert!(r.finish().unwrap());
        assert_eq!(dump(&rebuilt), dump(&db));
        let check: String = Connection::open(&rebuilt)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn large_commits_split_into_parts() {
        let p = Pages {
            page_size: 4096,
            db_pages: 300,
            pages: (1..=300).map(|n| (n, vec![n as u8; 4096])).collect(),
            image: true,
            file: None,
        };
        let recs: Vec<_> = p.records().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|r| r.len() <= RECORD_BYTES + 2048));
        assert_eq!(recs[2][0], KIND_COMMIT);
        assert!(
            Rebuild::create(&tempfile::tempdir().unwrap().path().join("x"))
                .unwrap()
                .apply(&[KIND_COMMIT, 0, 1])
                .is_err()
        );
    }

    #[test]
    fn a_commit_over_the_bound_is_refused_and_images_stream_from_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("o.db");
        let conn = open(&db);
        let mut shipper = Shipper::new(&db, &conn, false).unwrap();
        conn.execute("INSERT INTO t (k, v) VALUES (1, 'a')", [])
            .unwrap();
        let image = shipper.capture(&conn).unwrap().unwrap();
        assert!(image.image && image.pages.is_empty() && image.file.is_some());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("image")),
            "the image's copy has no name on disk"
        );
        // Later checkpoints change the database, not the image being shipped.
        conn.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])
            .unwrap();
        shipper.truncate(&conn).unwrap();
        let rebuilt = dir.path().join("r.db");
        let mut r = Rebuild::create(&rebuilt).unwrap();
        for rec in image.records() {
            r.apply(&rec.unwrap()).unwrap();
        }
        assert!(r.finish().unwrap());
        assert_eq!(dump(&rebuilt), vec![(1, "a".to_owned())]);

        let conn = open(&db);
        let mut shipper = Shipper::new(&db, &conn, true).unwrap();
        let big = "x".repeat(1 << 20);
        conn.execute_batch("BEGIN").unwrap();
        for k in 0..(MAX_COMMIT_BYTES >> 20) as i64 + 2 {
            conn.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                rusqlite::params![100 + k, big],
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let err = shipper.capture(&conn).unwrap_err().to_string();
        assert!(err.contains("over the 32 MiB"), "{err}");
    }
}
