//! Errors of the state layer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt stored record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{0} not found")]
    NotFound(String),
    /// The caller's account may not do this (another account owns the name,
    /// host or namespace).
    #[error("{0}")]
    Forbidden(String),
    /// A name or value the state layer refuses (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// The name exists already.
    #[error("{0}")]
    Conflict(String),
    /// Sealed secrets cannot be read or written (the node key).
    #[error("{0}")]
    Secrets(String),
    /// Stored data that should be there is missing or unreadable: it is not
    /// served as empty.
    #[error("{0}")]
    Damaged(String),
}

impl StateError {
    /// The disk (or the file system holding the data directory) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StateError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            StateError::Io { source, .. } => is_enospc(source),
            _ => false,
        }
    }
}

/// No space left on the device (or over quota).
pub fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
