//! The error body every failed request returns, and its stable codes.
//!
//! Codes are an open set on the wire: a daemon newer than the CLI may answer
//! with a code this build does not know. It decodes as
//! [`ErrorCode::Unknown`], keeping the spelling, and [`ApiError::from_response`]
//! keeps the HTTP status the daemon sent, so an old CLI still prints the
//! message and tells a client error from a server one.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Machine-readable error class. The HTTP status is derived from it so that
/// the daemon and the documentation cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// The filesystem holding the data directory is full (ENOSPC or EDQUOT).
    /// Nothing was left half-made; free space and retry.
    NoSpace,
    /// Anything else: a tool failed, a bug.
    Internal,
    /// A code this build does not know (from a newer daemon), as spelled.
    Unknown(String),
}

impl ErrorCode {
    /// Every code this build knows, in wire spelling (for the schema).
    pub const KNOWN: [&'static str; 7] = [
        "invalid_argument",
        "not_found",
        "ambiguous",
        "already_exists",
        "conflict",
        "no_space",
        "internal",
    ];

    /// HTTP status the daemon answers with for this code. An unknown code
    /// has no status of its own: [`ApiError::http_status`] uses the one
    /// the response carried.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Ambiguous => 409,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::Conflict => 409,
            ErrorCode::NoSpace => 507,
            ErrorCode::Internal | ErrorCode::Unknown(_) => 500,
        }
    }

    /// The wire spelling, e.g. `no_space`.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Ambiguous => "ambiguous",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown(s) => s,
        }
    }

    /// The code spelled `s`; never fails: what is not known is `Unknown`.
    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "invalid_argument" => ErrorCode::InvalidArgument,
            "not_found" => ErrorCode::NotFound,
            "ambiguous" => ErrorCode::Ambiguous,
            "already_exists" => ErrorCode::AlreadyExists,
            "conflict" => ErrorCode::Conflict,
            "no_space" => ErrorCode::NoSpace,
            "internal" => ErrorCode::Internal,
            other => ErrorCode::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(ErrorCode::parse(&s))
    }
}

/// Body of every error response: `{"error": {"code": ..., "message": ...}}`.
///
/// `message` is one line, lowercase, and already carries the causes joined by
/// `": "`, so the CLI prints it as is. Unknown fields are ignored: a newer
/// daemon may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The HTTP status this error arrived with, when decoded from a
    /// response; never on the wire (the status line carries it).
    #[serde(skip)]
    status: Option<u16>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
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
    /// The filesystem holding `path` is full.
    pub fn no_space(path: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NoSpace, format!("no space left on {path}"))
    }

    /// The status of the response: the one it arrived with when decoded
    /// from one, else the code's.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.http_status())
    }

    /// Decode the body of a failed response. A body that is not an
    /// [`ErrorBody`] (a proxy's page, a crash) becomes an `internal` error
    /// quoting it; either way the status is kept.
    pub fn from_response(status: u16, body: &[u8]) -> ApiError {
        let mut err = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => b.error,
            Err(_) => ApiError::internal(format!(
                "bangerd answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            )),
        };
        err.status = Some(status);
        err
    }
}

/// The envelope: `{"error": ApiError}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ApiError,
}
