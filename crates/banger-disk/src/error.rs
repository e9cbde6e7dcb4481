//! The one error type of this crate: every variant names the image or path and
//! the operation, so a caller's message reads without extra context.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Errors from building, editing or reading an ext4 image.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An e2fsprogs tool is not installed (or not on PATH, /usr/sbin, /sbin).
    #[error("{tool} not found; install e2fsprogs")]
    ToolMissing { tool: &'static str },

    /// A tool ran and reported failure. `stderr` holds what it said.
    #[error("{tool} failed on {}: {status}: {}", image.display(), stderr.trim())]
    ToolFailed {
        tool: &'static str,
        image: PathBuf,
        status: ExitStatus,
        stderr: String,
    },

    /// debugfs exits 0 even when commands fail; these are the failures it printed.
    #[error("debugfs {op} on {}: {}", image.display(), errors.join("; "))]
    Debugfs {
        op: &'static str,
        image: PathBuf,
        errors: Vec<String>,
    },

    /// The filesystem ran out of blocks or inodes while being populated.
    #[error("{} too small for its content ({size_bytes} bytes): {}", image.display(), stderr.trim())]
    NoSpace {
        image: PathBuf,
        size_bytes: u64,
        stderr: String,
    },

    /// `e2fsck -fn` found problems.
    #[error("{} is not clean: {}", image.display(), output.trim())]
    NotClean { image: PathBuf, output: String },

    /// A filesystem operation on the host failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `grow` was asked for a size smaller than the image.
    #[error("refusing to shrink {} from {current} to {requested} bytes", image.display())]
    Shrink {
        image: PathBuf,
        current: u64,
        requested: u64,
    },

    /// A guest path that cannot be used: relative, contains a newline or NUL
    /// (a debugfs script is line based), or is not UTF-8.
    #[error("invalid guest path {path:?}: {reason}")]
    InvalidGuestPath { path: String, reason: &'static str },

    /// debugfs printed something this crate does not understand.
    #[error("unexpected debugfs output for {guest_path} in {}: {detail}", image.display())]
    Parse {
        image: PathBuf,
        guest_path: String,
        detail: String,
    },

    /// A seed manifest entry disagrees with the seed directory.
    #[error("seed entry {path}: {reason}")]
    Manifest { path: String, reason: String },
}

impl DiskError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DiskError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
