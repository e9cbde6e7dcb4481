//! Root filesystems to read-only ext4 base images plus work seeds.
//!
//! Owns: turning a root tree (a directory, a tar/tar.gz/tar.zst, or OCI layers) into
//! `rootfs.ext4`, `work-seed/` and `work-seed.json` without root and without
//! mounting; the OCI layer applier ([`LayerApplier`]) that unpacks safely
//! into a staging root; the `banger-rootfs` worker that does this inside
//! `fakeroot` so owners, setuid bits and device nodes survive.
//!
//! Also: building a base from an ordered list of OCI layer blobs
//! ([`import_layers`]), which `banger-oci` pulls into its cache.
//!
//! Does not own: fetching images (`banger-oci`), the image registry, or
//! per-VM disks (`banger-disk`).
//!
//! Invariant: nothing is written outside the staging root and the temporary
//! build directory; the destination appears by one rename or not at all.

mod error;
mod event;
mod fakeroot;
mod import;
mod layer;
mod source;
mod tree;
mod worker;

pub use error::ImageError;
pub use event::{BuildReport, ImportEvent, ImportStage, WorkerFailure, WorkerMessage};
pub use import::{
    ImportedImage, MEMORY_STAGING_ENV, Scratch, import_layers, import_rootfs,
    memory_staging_prefix, remove_stale_memory_staging,
};
pub use layer::{LayerApplier, LayerStats};
pub use source::{Compression, decompressed, detect, sniff};
pub use tree::{INIT_PATHS, has_init, resolve_in_root};
pub use worker::{BASE_NAME, SEED_DIR_NAME, SEED_MANIFEST_NAME, WorkerSource, run_worker};
