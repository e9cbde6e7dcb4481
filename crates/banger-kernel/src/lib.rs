//! Kernel import: kernel files and Debian `linux-image-*` packages.
//!
//! This crate turns what a user hands to `banger kernel import` into a
//! self-contained directory the daemon can register:
//!
//! ```text
//! DEST/vmlinuz | DEST/vmlinux     the kernel image (bzImage or ELF)
//! DEST/initrd                     optional, from `import_file`
//! DEST/config                     the kernel .config, from a .deb
//! DEST/modules/<release>/...      modules with a modules.dep, from a .deb
//! ```
//!
//! It validates that the input really is a kernel ([`probe`]), never writes
//! outside `DEST` whatever an archive contains, and builds `DEST` in a
//! temporary directory beside it, renamed into place at the end, so a failed
//! import leaves nothing behind. [`ModuleIndex`] answers which module files
//! (in load order) the banger initramfs needs for a set of module names.
//!
//! It does not store anything (the store crate records the result), fetch
//! kernels, or build initramfs images.

mod deb;
mod error;
mod file;
mod modules;
mod probe;
mod staging;

use std::path::PathBuf;

pub use deb::import_deb;
pub use error::KernelError;
pub use file::import_file;
pub use modules::{ModuleIndex, ModulePlan, write_modules_dep};
pub use probe::{KernelFormat, KernelInfo, probe};

/// The result of an import: absolute paths inside the destination directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedKernel {
    pub kernel_path: PathBuf,
    pub initrd_path: Option<PathBuf>,
    /// `DEST/modules/<release>` when the kernel came with modules.
    pub modules_path: Option<PathBuf>,
    /// `uname -r` of the kernel, when it could be read.
    pub release: Option<String>,
    pub format: KernelFormat,
}
