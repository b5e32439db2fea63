//! KV as a replica of one ordered log (cluster mode): the record format, the
//! interface to the log, how records are applied, and snapshots.
//!
//! In a cluster every `put`/`delete` (from a worker, the KV admin API or
//! `edged kv`) becomes one [`KvRecord`] appended to the engine's KV log; it
//! resolves when the engine has acknowledged it **and** this node has applied
//! it (so the writer reads its own write at once). Each node applies the log
//! in log order ([`super::KvService::apply`]), one transaction per namespace and
//! batch, and evicts the edge-cache entry of each key it applies: one global
//! order, so every node ends in the same state (the last writer by log
//! sequence wins), and `list()` anywhere reflects it. The sequence applied is
//! persisted (`kv/applied`, written after the batch's namespace transactions
//! commit); a restart resumes after it. Re-applying a tail of the log after a
//! crash is harmless: records are re-applied in order, so the end state is
//! the same.
//!
//! Nothing here talks to the engine: [`KvLog`] is implemented by the cluster.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::js::KvValue;

/// Values larger than this travel outside the log record (the engine's
/// object store), the record carrying a reference.
pub const INLINE_VALUE_BYTES: usize = 512 << 10;

/// The interface to the cluster's KV log.
pub trait KvLog: Send + Sync {
    /// Appends `record` for namespace `ns`, with `blob` (name, value): a
    /// value too large to travel inline, stored first under the name the
    /// record's header gives; the log sequence once the engine acknowledged it.
    fn append(
        &self,
        ns: &str,
        record: Bytes,
        blob: Option<(String, Bytes)>,
    ) -> futures::future::BoxFuture<'static, Result<u64, String>>;
}

/// The header of a record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub ns: String,
    pub key: String,
    /// `false`: a delete.
    pub put: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// The writer's wall clock (for propagation metrics only).
    pub at_ms: u64,
    /// The value is not inline but in the engine's object store under this
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// The whole namespace is removed (its account was): `key` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
}

/// One write as the log carries it: a header and, for an inline put, the value.
#[derive(Debug, Clone, PartialEq)]
pub struct KvRecord {
    pub header: Header,
    pub value: Bytes,
}

fn bad(why: &str) -> String {
    format!("malformed KV log record: {why}")
}

impl KvRecord {
    /// `[u32 header length][header JSON][value]`.
    pub fn encode(&self) -> Bytes {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + header.len() + self.value.len());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.value);
        out.into()
    }

    pub fn decode(data: Bytes) -> Result<KvRecord, String> {
        if data.len() < 4 {
            return Err(bad("short"));
        }
        let n = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if data.len() < 4 + n {
            return Err(bad("short header"));
        }
        let header: Header =
            serde_json::from_slice(&data[4..4 + n]).map_err(|e| bad(&e.to_string()))?;
        if !super::valid_namespace(&header.ns) {
            return Err(bad("namespace"));
        }
        Ok(KvRecord {
            header,
            value: data.slice(4 + n..),
        })
    }

    /// The value this record writes (`None` for a delete). A blob must have
    /// been resolved into `value` first.
    pub fn entry(&self) -> Option<KvValue> {
        self.header.put.then(|| KvValue {
            value: self.value.clone(),
            metadata: self.header.metadata.clone(),
            expiration: self.header.expiration,
        })
    }
}

/// Where this node keeps the sequence it applied.
pub fn applied_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kv").join("applied")
}

/// The last sequence applied here (0: none).
pub fn read_applied(path: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Records `seq` as applied (write, sync, rename: never half-written).
pub fn write_applied(path: &Path, seq: u64) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(seq.to_string().as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// A snapshot file: `[u64 seq]` then `[u32 length][record]…` (every live key
/// of every namespace as a put record), read and written as streams.
pub struct SnapshotWriter {
    out: BufWriter<std::fs::File>,
    pub keys: u64,
}

impl SnapshotWriter {
    pub fn create(path: &Path, seq: u64) -> Result<Self, String> {
        let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = BufWriter::new(f);
        out.write_all(&seq.to_be_bytes())
            .map_err(|e| e.to_string())?;
        Ok(SnapshotWriter { out, keys: 0 })
    }

    pub fn add(&mut self, record: &KvRecord) -> Result<(), String> {
        let data = record.encode();
        self.out
            .write_all(&(data.len() as u32).to_be_bytes())
            .and_then(|_| self.out.write_all(&data))
            .map_err(|e| e.to_string())?;
        self.keys += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<(), String> {
        let f = self.out.into_inner().map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())
    }
}

pub struct SnapshotReader {
    input: BufReader<std::fs::File>,
    pub seq: u64,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<Self, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut input = BufReader::new(f);
        let mut seq = [0u8; 8];
        input
            .read_exact(&mut seq)
            .map_err(|_| bad("snapshot header"))?;
        Ok(SnapshotReader {
            input,
            seq: u64::from_be_bytes(seq),
        })
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<KvRecord, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.to_string())),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > super::MAX_VALUE_BYTES + (64 << 10) {
            return Some(Err(bad("snapshot record too large")));
        }
        let mut data = vec![0u8; n];
        if let Err(e) = self.input.read_exact(&mut data) {
            return Some(Err(e.to_string()));
        }
        Some(KvRecord::decode(data.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let r = KvRecord {
            header: Header {
                ns: "ns_1".into(),
                key: "k/é".into(),
                put: true,
                metadata: Some("{\"a\":1}".into()),
                expiration: Some(99),
                at_ms: 5,
                blob: None,
                drop: false,
            },
            value: Bytes::from_static(b"\x00value"),
        };
        assert_eq!(KvRecord::decode(r.encode()).unwrap(), r);
        assert!(KvRecord::decode(Bytes::from_static(b"\x00\x00\x00\x09{}")).is_err());
        let mut evil = r.clone();
        evil.header.ns = "../x".into();
        assert!(KvRecord::decode(evil.encode()).is_err());

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut w = SnapshotWriter::create(&p, 42).unwrap();
        w.add(&r).unwrap();
        w.add(&r).unwrap();
        w.finish().unwrap();
        let rd = SnapshotReader::open(&p).unwrap();
        assert_eq!(rd.seq, 42);
        assert_eq!(
            rd.map(Result::unwrap).collect::<Vec<_>>(),
            vec![r.clone(), r]
        );

        let a = dir.path().join("applied");
        assert_eq!(read_applied(&a).unwrap(), 0);
        write_applied(&a, 17).unwrap();
        assert_eq!(read_applied(&a).unwrap(), 17);
    }
}
