//! Errors of the actor layer.

use crate::js::EngineError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The uploaded script failed to start (parse error, top-level throw, …).
    #[error("{0}")]
    Script(String),
    #[error("route '{route}' is already served by worker '{other}'")]
    RouteConflict { route: String, other: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("worker '{0}' has no earlier version to roll back to")]
    NoPreviousVersion(String),
    #[error(transparent)]
    Store(#[from] StateError),
    #[error(transparent)]
    Engine(EngineError),
    #[error("actor unavailable: {0}")]
    Mailbox(String),
}
