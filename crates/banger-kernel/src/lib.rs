//! Kernel import: kernel files and Debian `linux-image-*` packages.
//!
//! This crate turns what a user hands to `banger kernel import` into a
//! self-contained directory the daemon can register:
//!
//! ```text
//! DEST/vmlinuz                    the bzImage, when the kernel came as one
//! DEST/vmlinux                    the ELF kernel: given, or decompressed from
//!                                 the bzImage ([`extract_vmlinux`])
//! DEST/initrd                     optional, from `import_file`
//! DEST/config                     the kernel .config, from a .deb or IKCONFIG
//! DEST/modules/<release>/...      modules with a modules.dep, from a .deb
//! ```
//!
//! From these it judges which VMMs can boot the kernel ([`compat`]).
//!
//! It validates that the input really is a kernel ([`probe`]), never writes
//! outside `DEST` whatever an archive contains, and builds `DEST` in a
//! temporary directory beside it, renamed into place at the end, so a failed
//! import leaves nothing behind. [`ModuleIndex`] answers which module files
//! (in load order) the banger initramfs needs for a set of module names.
//!
//! It does not store anything (the store crate records the result), fetch
//! kernels, or build initramfs images.

pub mod compat;
mod deb;
mod derive;
mod error;
mod file;
mod kconfig;
mod modules;
mod probe;
mod staging;
mod vmlinux;

use std::path::PathBuf;

pub use deb::import_deb;
pub use error::KernelError;
pub use file::import_file;
pub use kconfig::{KernelConfig, Tristate};
pub use modules::{ModuleIndex, ModulePlan, index_modules, modinfo, write_modules_dep};
pub use probe::{KernelFormat, KernelInfo, probe};
pub use vmlinux::{Compression, ElfInfo, Segment, extract_vmlinux, read_elf};

/// The result of an import: absolute paths inside the destination directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedKernel {
    /// The image as given: `vmlinuz` (bzImage) or `vmlinux` (ELF).
    pub kernel_path: PathBuf,
    /// The ELF vmlinux, given or derived; `None` with the reason in
    /// `vmlinux_error` when a bzImage could not be decompressed.
    pub vmlinux_path: Option<PathBuf>,
    pub vmlinux_error: Option<String>,
    /// `DEST/config` when the kernel's config was found.
    pub config_path: Option<PathBuf>,
    /// Which VMMs can boot it, and why not.
    pub support: Vec<compat::VmmSupport>,
    pub initrd_path: Option<PathBuf>,
    /// `DEST/modules/<release>` when the kernel came with modules.
    pub modules_path: Option<PathBuf>,
    /// `uname -r` of the kernel, when it could be read.
    pub release: Option<String>,
    pub format: KernelFormat,
}
