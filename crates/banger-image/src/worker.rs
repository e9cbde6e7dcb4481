//! The part of an import that runs inside `fakeroot` (the `banger-rootfs`
//! binary): unpack, `mkfs.ext4 -d` in the same fakeroot session, work seed.
//! It writes only into its build directory and reports on `emit`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use banger_disk::{DiskError, MkfsOptions, mkfs_from_dir};

use crate::ImageError;
use crate::event::{BuildReport, ImportEvent, ImportStage, WorkerMessage};
use crate::layer::LayerApplier;
use crate::source::{Compression, decompressed, detect};
use crate::tree::{has_init, measure, write_work_seed};

/// Names inside a build (and, after the rename, the destination) directory.
pub const BASE_NAME: &str = "rootfs.ext4";
pub const SEED_DIR_NAME: &str = "work-seed";
pub const SEED_MANIFEST_NAME: &str = "work-seed.json";
/// The unpacked tree, left in the build directory for the caller to
/// remove off the critical path (see `import::run_build`).
pub const STAGING_NAME: &str = "staging";

/// What the worker builds from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerSource {
    /// A root tree used as is by `mkfs.ext4 -d`.
    Dir(PathBuf),
    /// A tar, tar.gz or tar.zst of a root tree.
    Tarball(PathBuf),
    /// OCI layers, bottom first, applied in order onto an empty root. The
    /// compression is what the manifest declares; the content's magic
    /// wins when it is recognisable (an empty tar has none).
    Layers(Vec<(PathBuf, Compression)>),
}

/// Build `rootfs.ext4`, `work-seed/` and `work-seed.json` in `out_dir`.
/// An archive is unpacked into `memory_staging` (a directory on tmpfs)
/// when given, falling back to `out_dir/staging` if memory runs out.
pub fn run_worker(
    source: &WorkerSource,
    out_dir: &Path,
    memory_staging: Option<&Path>,
    emit: &mut dyn FnMut(WorkerMessage),
) -> Result<BuildReport, ImageError> {
    let layers = match source {
        WorkerSource::Dir(_) => Vec::new(),
        WorkerSource::Tarball(path) => vec![(path.clone(), detect(path)?)],
        WorkerSource::Layers(layers) => layers.clone(),
    };
    let mut staged_in_memory = false;
    let root = match source {
        WorkerSource::Dir(dir) => dir.clone(),
        WorkerSource::Tarball(_) | WorkerSource::Layers(_) => {
            emit(WorkerMessage::Event(ImportEvent::Stage {
                stage: ImportStage::Unpack,
            }));
            let on_disk = out_dir.join(STAGING_NAME);
            match memory_staging.map(|m| m.join(STAGING_NAME)) {
                Some(in_memory) => match unpack(&layers, &in_memory, emit) {
                    Ok(()) => {
                        staged_in_memory = true;
                        in_memory
                    }
                    Err(e) if is_out_of_space(&e) => {
                        // Bigger than the estimate: free the memory, redo
                        // it on disk.
                        std::fs::remove_dir_all(&in_memory)
                            .map_err(|e| ImageError::io("remove", &in_memory, e))?;
                        unpack(&layers, &on_disk, emit)?;
                        on_disk
                    }
                    Err(e) => return Err(e),
                },
                None => {
                    unpack(&layers, &on_disk, emit)?;
                    on_disk
                }
            }
        }
    };

    emit(WorkerMessage::Event(ImportEvent::Stage {
        stage: ImportStage::BuildBase,
    }));
    let usage = measure(&root)?;
    let base = out_dir.join(BASE_NAME);
    let mut size = usage.image_size();
    let opts = MkfsOptions {
        label: None,
        inodes: Some(usage.inode_count()),
        journal: false,
    };
    // The estimate is generous, but a tree of many tiny files can still beat
    // it; retry larger rather than fail.
    let mut attempts = 0;
    loop {
        match mkfs_from_dir(&root, &base, size, &opts) {
            Ok(()) => break,
            Err(DiskError::NoSpace { .. }) if attempts < 3 => {
                attempts += 1;
                size = size / 2 * 3;
            }
            Err(e) => return Err(e.into()),
        }
    }

    emit(WorkerMessage::Event(ImportEvent::Stage {
        stage: ImportStage::WorkSeed,
    }));
    let (manifest, _skipped_devices) = write_work_seed(&root, &out_dir.join(SEED_DIR_NAME))?;
    manifest.save(&out_dir.join(SEED_MANIFEST_NAME))?;
    let has_init = has_init(&root)?;
    Ok(BuildReport {
        size_bytes: size,
        has_init,
        staged_in_memory,
    })
}

/// Whether `err` comes from a full filesystem (ENOSPC anywhere in its chain).
fn is_out_of_space(err: &ImageError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && (io.raw_os_error() == Some(nix::libc::ENOSPC)
                || io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Apply `layers` in order onto a new staging root. Progress is in bytes
/// of the files as stored, summed over all layers.
fn unpack(
    layers: &[(PathBuf, Compression)],
    staging: &Path,
    emit: &mut dyn FnMut(WorkerMessage),
) -> Result<(), ImageError> {
    let mut total = 0;
    for (path, _) in layers {
        total += std::fs::metadata(path)
            .map_err(|e| ImageError::io("stat", path, e))?
            .len();
    }
    std::fs::create_dir(staging).map_err(|e| ImageError::io("create", staging, e))?;
    let mut applier = LayerApplier::open(staging)?;
    let mut base = 0;
    for (index, (path, declared)) in layers.iter().enumerate() {
        let compression = match detect(path) {
            Ok(found) => found,
            Err(ImageError::UnsupportedFormat { .. }) => *declared,
            Err(e) => return Err(e),
        };
        let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ImageError::io("stat", path, e))?
            .len();
        let counted = Counting {
            inner: file,
            base,
            done: 0,
            reported: 0,
            total,
            emit: &mut *emit,
        };
        // Decompression reads through the counter, so progress is in bytes
        // of the file as stored.
        let reader = decompressed(counted, compression, path)?;
        applier.apply(index, reader)?;
        base += len;
    }
    // tar stops at its end marker, usually before EOF: report completion.
    emit(WorkerMessage::Event(ImportEvent::Progress {
        stage: ImportStage::Unpack,
        done: total,
        total,
    }));
    Ok(())
}

/// A reader that reports progress every 4 MiB and at the end.
struct Counting<'a> {
    inner: File,
    /// Bytes of the layers before this one.
    base: u64,
    done: u64,
    reported: u64,
    total: u64,
    emit: &'a mut dyn FnMut(WorkerMessage),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 4 << 20 || (n == 0 && self.done != self.reported) {
            self.reported = self.done;
            (self.emit)(WorkerMessage::Event(ImportEvent::Progress {
                stage: ImportStage::Unpack,
                done: self.base + self.done,
                total: self.total,
            }));
        }
        Ok(n)
    }
}
