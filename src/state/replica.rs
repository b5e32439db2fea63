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

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::StateError;

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
/// Page bytes per engine message (the engine's default limit is 1 MiB).
pub const RECORD_BYTES: usize = 512 << 10;
/// A WAL past this many bytes is checkpointed and truncated after a capture.
const WAL_CHECKPOINT_BYTES: u64 = 4 << 20;

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
}

impl Pages {
    pub fn bytes(&self) -> usize {
        self.pages.iter().map(|(_, p)| p.len()).sum()
    }

    /// The records that carry this commit: parts of at most
    /// [`RECORD_BYTES`] of pages, the last one a `Commit`.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let per = (RECORD_BYTES / self.page_size.max(512) as usize).max(1);
        let chunks: Vec<&[(u32, Vec<u8>)]> = if self.pages.is_empty() {
            vec![&[]]
        } else {
            self.pages.chunks(per).collect()
        };
        let last = chunks.len() - 1;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let kind = if i == last { KIND_COMMIT } else { KIND_PART };
                let mut out = Vec::with_capacity(14 + chunk.len() * (4 + self.page_size as usize));
                out.push(kind);
                out.push(if self.image { FLAG_IMAGE } else { 0 });
                out.extend_from_slice(&self.page_size.to_be_bytes());
                out.extend_from_slice(&self.db_pages.to_be_bytes());
                out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                for (pgno, page) in chunk {
                    out.extend_from_slice(&pgno.to_be_bytes());
                    out.extend_from_slice(page);
                }
                out
            })
            .collect()
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
            let image = read_image(&self.db)?;
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
        }))
    }
}

/// The whole database file as an image.
pub fn read_image(db: &Path) -> Result<Pages, StateError> {
    let data = std::fs::read(db).map_err(io(db))?;
    if data.len() < 100 {
        return Err(StateError::Invalid("the object's database is empty".into()));
    }
    // Bytes 16–17 of the header: the page size (1 means 65536).
    let raw = u16::from_be_bytes([data[16], data[17]]) as u32;
    let page_size = if raw == 1 { 65536 } else { raw };
    if !(512..=65536).contains(&page_size) || data.len() % page_size as usize != 0 {
        return Err(StateError::Invalid(
            "the object's database has a bad size".into(),
        ));
    }
    let pages = data
        .chunks(page_size as usize)
        .enumerate()
        .map(|(i, p)| (i as u32 + 1, p.to_vec()))
        .collect::<Vec<_>>();
    Ok(Pages {
        page_size,
        db_pages: pages.len() as u32,
        pages,
        image: true,
    })
}

/// A database rebuilt from an object's log, record by record (a restore).
pub struct Rebuild {
    path: PathBuf,
    file: std::fs::File,
    /// Pages of the commit whose `Commit` record has not arrived yet.
    open: Vec<(u32, Vec<u8>)>,
    open_image: bool,
    /// An image has been applied (the file is a whole database).
    pub has_base: bool,
    pub bytes: u64,
}

fn bad_record() -> StateError {
    StateError::Invalid("malformed record in the object's log".into())
}

impl Rebuild {
    /// Starts an empty file at `path` (replacing any).
    pub fn create(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        Ok(Rebuild {
            path: path.to_owned(),
            file,
            open: Vec::new(),
            open_image: false,
            has_base: false,
            bytes: 0,
        })
    }

    /// Applies one record of the log.
    pub fn apply(&mut self, record: &[u8]) -> Result<(), StateError> {
        self.bytes += record.len() as u64;
        let (&kind, rest) = record.split_first().ok_or_else(bad_record)?;
        if kind == KIND_EPOCH {
            // A commit its owner did not finish: never applied.
            self.open.clear();
            self.open_image = false;
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
        if image && self.open.is_empty() {
            self.open_image = true;
        }
        for chunk in body.chunks(4 + page_size) {
            self.open.push((be32(&chunk[..4]), chunk[4..].to_vec()));
        }
        if kind == KIND_COMMIT {
            if self.open_image {
                self.file.set_len(0).map_err(io(&self.path))?;
                self.has_base = true;
            }
            for (pgno, page) in self.open.drain(..) {
                if pgno == 0 {
                    return Err(bad_record());
                }
                self.file
                    .seek(SeekFrom::Start((pgno as u64 - 1) * page_size as u64))
                    .map_err(io(&self.path))?;
                self.file.write_all(&page).map_err(io(&self.path))?;
            }
            self.file
                .set_len(db_pages as u64 * page_size as u64)
                .map_err(io(&self.path))?;
            self.open_image = false;
        }
        Ok(())
    }

    /// Syncs the file; `true` when it holds a database (an image arrived).
    pub fn finish(self) -> Result<bool, StateError> {
        self.file.sync_all().map_err(io(&self.path))?;
        Ok(self.has_base)
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
                log.extend(p.encode());
            }
            if i == 200 {
                // A commit its owner never finished, then a new owner.
                let half = Pages {
                    page_size: 4096,
                    db_pages: 1,
                    pages: vec![(1, vec![0; 4096])],
                    image: true,
                };
                let mut part = half.encode()[0].clone();
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
        };
        let recs = p.encode();
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
}
