//! Errors of image import. Each variant names the path or tar entry (and
//! layer index) it is about.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Errors from turning a root filesystem into a base image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },

    /// Not a directory, tar, tar.gz or tar.zst (judged by content).
    #[error("{} is not a directory or a tar, tar.gz or tar.zst archive", path.display())]
    UnsupportedFormat { path: PathBuf },

    /// An image must have at least one layer.
    #[error("image has no layers")]
    NoLayers,

    #[error("{} already exists", path.display())]
    DestinationExists { path: PathBuf },

    /// A tar entry that would write outside the root or is malformed in a
    /// way that could; the whole import fails.
    #[error("layer {layer}: unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        layer: usize,
        entry: String,
        reason: String,
    },

    /// A tar entry type this applier does not handle (e.g. GNU sparse files).
    #[error("layer {layer}: entry {entry:?} has unsupported type {kind}")]
    UnsupportedEntry {
        layer: usize,
        entry: String,
        kind: String,
    },

    /// Writing one tar entry into the staging tree failed.
    #[error("layer {layer}: {op} {entry:?}")]
    Entry {
        layer: usize,
        entry: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The archive itself could not be read (truncated, corrupt, bad compression).
    #[error("layer {layer}: read archive")]
    Archive {
        layer: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file name in the work seed that the manifest cannot carry.
    #[error("work seed path {} is not valid UTF-8", path.display())]
    NonUtf8 { path: PathBuf },

    #[error("{tool} not found; install {package}")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },

    /// The fakeroot worker failed; `message` is the last line it printed,
    /// `input` whether it said the source was at fault.
    #[error("rootfs worker failed ({status}): {message}")]
    Worker {
        status: ExitStatus,
        message: String,
        stderr: String,
        input: bool,
    },

    /// The worker printed something that is not a protocol message.
    #[error("rootfs worker protocol: {detail}")]
    WorkerProtocol { detail: String },

    #[error(transparent)]
    Disk(#[from] banger_disk::DiskError),
}

impl ImageError {
    /// Whether the source the user named is at fault (missing, not an
    /// archive, corrupt, hostile or unrepresentable), not this machine.
    pub fn is_input_error(&self) -> bool {
        match self {
            ImageError::NotFound { .. }
            | ImageError::UnsupportedFormat { .. }
            | ImageError::UnsafeEntry { .. }
            | ImageError::UnsupportedEntry { .. }
            | ImageError::Archive { .. }
            | ImageError::NonUtf8 { .. } => true,
            ImageError::Worker { input, .. } => *input,
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
