//! The error body every failed request returns, and its stable codes.

use serde::{Deserialize, Serialize};

/// Machine-readable error class. The HTTP status is derived from it so that
/// the daemon and the documentation cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or a value was out of range.
    InvalidArgument,
    /// The named object does not exist.
    NotFound,
    /// A name or prefix matched more than one object.
    Ambiguous,
    /// The object exists already (duplicate name).
    AlreadyExists,
    /// The operation conflicts with the object's state (image in use, VM running).
    Conflict,
    /// Anything else: a tool failed, the disk is full, a bug.
    Internal,
}

impl ErrorCode {
    /// HTTP status the daemon answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Ambiguous => 409,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::Conflict => 409,
            ErrorCode::Internal => 500,
        }
    }
}

/// Body of every error response: `{"error": {"code": ..., "message": ...}}`.
///
/// `message` is one line, lowercase, and already carries the causes joined by
/// `": "`, so the CLI prints it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

/// The envelope: `{"error": ApiError}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ApiError,
}
