//! The HTTP boundary's error: every failure leaves as
//! `{"error":{"code":"…","message":"…"}}` with a fitting status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::actors::ActorError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The same error with context in front of its message.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

/// The JSON error body.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": { "code": code, "message": message }
    }))
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        error_body(self.status, self.code, &self.message)
    }
}

impl From<ActorError> for HttpError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Script(m) => HttpError::bad_request("script_error", m),
            ActorError::RouteConflict { .. } => {
                HttpError::new(StatusCode::CONFLICT, "route_conflict", e.to_string())
            }
            ActorError::NotFound(_) => HttpError::not_found(e.to_string()),
            ActorError::NoPreviousVersion(_) => {
                HttpError::new(StatusCode::CONFLICT, "no_previous_version", e.to_string())
            }
            ActorError::Store(s) => s.into(),
            ActorError::Engine(_) | ActorError::Mailbox(_) => {
                tracing::error!(error = %e, "control plane operation failed");
                HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<crate::actors::deploy_sync::SyncError> for HttpError {
    fn from(e: crate::actors::deploy_sync::SyncError) -> Self {
        use crate::actors::deploy_sync::SyncError;
        match e {
            SyncError::Actor(a) => a.into(),
            SyncError::Unavailable(_) => {
                tracing::warn!(error = %e, "deployment refused: the cluster engine is unreachable");
                HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    e.to_string(),
                )
            }
            SyncError::Conflict(_) => {
                HttpError::new(StatusCode::CONFLICT, "deploy_conflict", e.to_string())
            }
        }
    }
}

impl From<crate::cluster::engine::EngineError> for HttpError {
    fn from(e: crate::cluster::engine::EngineError) -> Self {
        use crate::cluster::engine::EngineError;
        match e {
            EngineError::Conflict => HttpError::new(
                StatusCode::CONFLICT,
                "conflict",
                "changed on another node meanwhile; try again",
            ),
            EngineError::Unreachable(_) => {
                tracing::warn!(error = %e, "account change refused: the cluster engine is unreachable");
                HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    e.to_string(),
                )
            }
        }
    }
}

impl From<StateError> for HttpError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::NotFound(_) => HttpError::not_found(e.to_string()),
            StateError::Forbidden(m) => HttpError::new(StatusCode::FORBIDDEN, "forbidden", m),
            StateError::Conflict(m) => HttpError::new(StatusCode::CONFLICT, "conflict", m),
            StateError::Invalid(m) => HttpError::bad_request("invalid_name", m),
            full if full.is_disk_full() => {
                tracing::error!(error = %full, "the data directory's disk is full");
                HttpError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    "the node's disk is full: nothing was changed; retry once space is freed",
                )
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                HttpError::internal("storage failure; see the node's log")
            }
        }
    }
}
