//! ext4 building and editing with e2fsprogs: base, overlay and work disks.
//!
//! Owns: making an ext4 image from a directory (`mkfs.ext4 -d` on a sparse
//! file), fixing owners and modes inside an image with one batched
//! `debugfs -w` script, reading images back (`stat`, file content, listings),
//! checking (`e2fsck -fn`) and growing (`resize2fs`) them, the work seed
//! manifest format, and hole-keeping copies of disk files (`sparse_copy`).
//!
//! Does not own: where images live or when they are built (the daemon), nor
//! turning root filesystems into base images (`banger-image`). It never
//! mounts anything and never needs root.

mod copy;
mod debugfs;
mod error;
mod inode;
mod manifest;
mod mkfs;
mod staging;
mod tool;

pub use copy::sparse_copy;
pub use debugfs::{apply_owners, list_dir, put_file, read_file, stat};
pub use error::DiskError;
pub use inode::{DirEntry, Ext4Stat, FileKind, OwnerFix};
pub use manifest::{SEED_MANIFEST_VERSION, SeedEntry, SeedManifest, build_disk_with_manifest};
pub use mkfs::{MkfsOptions, fsck_check, grow, mkfs_from_dir};
pub use staging::Staging;
pub use tool::{die_with_parent, signal_on_parent_death};
