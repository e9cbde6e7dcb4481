//! The crate's error type: every variant names the file it is about.

use std::io;
use std::path::PathBuf;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// An I/O call failed; `op` says which (`read`, `create`, `rename`...).
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is neither an x86 bzImage nor an ELF vmlinux.
    #[error("{} is not a kernel: {reason}", path.display())]
    NotAKernel { path: PathBuf, reason: String },

    /// A FIFO, device or directory where a file was wanted: reading one
    /// could block or never end.
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },

    /// The file given as initrd is none the kernel could unpack or mount.
    #[error("{} is not an initrd: {reason}", path.display())]
    NotAnInitrd { path: PathBuf, reason: String },

    /// The package holds no kernel image.
    #[error(
        "{} is not a kernel package: no boot/vmlinuz-*; for linux-image-cloud-amd64 \
         (a metapackage) download the linux-image-<version>-cloud-amd64 package it depends on",
        path.display()
    )]
    NotAKernelPackage { path: PathBuf },

    /// The package is not a well-formed .deb.
    #[error("{} is not a valid debian package: {reason}", path.display())]
    BadPackage { path: PathBuf, reason: String },

    /// An archive entry would land outside the destination.
    #[error("{}: entry {entry} escapes the destination", archive.display())]
    UnsafeEntry { archive: PathBuf, entry: String },

    /// The vmlinuz, its header and the modules directory disagree.
    #[error("{}: kernel release {kernel} does not match modules for {modules}", path.display())]
    ReleaseMismatch {
        path: PathBuf,
        kernel: String,
        modules: String,
    },

    /// A module file could not be parsed while building modules.dep.
    #[error("{}: bad kernel module: {reason}", path.display())]
    BadModule { path: PathBuf, reason: String },

    /// A module asked for is neither a file nor built in.
    #[error("module {name} not found in {}", modules_dir.display())]
    UnknownModule { name: String, modules_dir: PathBuf },

    #[error("{} already exists", path.display())]
    DestinationExists { path: PathBuf },
}

impl KernelError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| KernelError::Io { op, path, source }
    }
}
