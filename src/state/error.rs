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
}
