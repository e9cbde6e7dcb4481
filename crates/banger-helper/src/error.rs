//! The helper's error type, shared by the server, the client and the
//! in-process executor so a daemon sees the same error either way.

use std::io;
use std::path::PathBuf;

use banger_net::NetError;

use crate::proto::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// A banger-net operation failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The operation names a resource that is not banger's.
    #[error("refused: {0}")]
    Refused(String),
    /// The caller's uid is not served.
    #[error("uid {uid} may not use the banger helper (it serves uid {owner} and root)")]
    Forbidden { uid: u32, owner: u32 },
    /// Daemon and helper speak different protocol versions.
    #[error(
        "banger-helper speaks protocol {helper} but this banger speaks {client}; restart the helper from the same banger release (banger system restart)"
    )]
    VersionMismatch { helper: u32, client: u32 },
    /// The helper's socket could not be reached.
    #[error("connect to banger-helper at {}: is it running? (banger system status)", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Talking to the helper failed midway.
    #[error("{op} banger-helper socket")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// A message that does not follow the protocol.
    #[error("banger-helper protocol: {0}")]
    Protocol(String),
    /// The helper's configuration or state file cannot be used.
    #[error("{}: {why}", path.display())]
    Config { path: PathBuf, why: String },
    /// An error the helper reported, with its kind.
    #[error("banger-helper: {message}")]
    Remote { kind: ErrorKind, message: String },
}

impl HelperError {
    /// The wire kind this error is reported as.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HelperError::Refused(_) => ErrorKind::Refused,
            HelperError::Forbidden { .. } => ErrorKind::Forbidden,
            HelperError::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            HelperError::Protocol(_) => ErrorKind::BadRequest,
            HelperError::Remote { kind, .. } => *kind,
            _ => ErrorKind::Failed,
        }
    }
}
