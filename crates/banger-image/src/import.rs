//! [`import_rootfs`] and [`import_layers`]: the daemon-side half of an
//! import. They validate the source, run the `banger-rootfs` worker under `fakeroot` in a temporary
//! directory beside the destination, relays the worker's progress, and
//! renames the result into place only when everything succeeded.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::ImageError;
use crate::event::{ImportEvent, WorkerMessage};
use crate::source::{Compression, detect};
use crate::worker::{BASE_NAME, SEED_DIR_NAME, SEED_MANIFEST_NAME, STAGING_NAME};

/// A finished import, as laid out in the destination directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The read-only base: `dest_dir/rootfs.ext4`.
    pub base_path: PathBuf,
    /// The copy of the image's `/root`: `dest_dir/work-seed`.
    pub work_seed_dir: PathBuf,
    /// Its true owners and modes: `dest_dir/work-seed.json`.
    pub work_seed_manifest_path: PathBuf,
    /// Size of the base image in bytes.
    pub size_bytes: u64,
    /// Whether the image has its own init (systemd or `/sbin/init`).
    pub has_init: bool,
    /// The tree was unpacked on tmpfs (and is already removed: that takes
    /// a tenth of a second).
    pub staged_in_memory: bool,
    /// The tree unpacked on disk, moved aside; removed when the last clone
    /// is dropped. Deleting thousands of files there takes a second or
    /// more, so a caller in a hurry drops it on another thread.
    pub scratch: Option<Arc<Scratch>>,
}

/// A directory an import is done with, removed (best effort) on drop. If
/// the process dies first it is a hidden entry beside the destination.
#[derive(Debug, PartialEq, Eq)]
pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Import the root filesystem at `source` (a directory, or a tar, tar.gz or
/// tar.zst file, judged by content) into `dest_dir`, which must not exist.
/// `worker_exe` is the `banger-rootfs` binary. On error `dest_dir` is left
/// absent and nothing else is written.
pub fn import_rootfs(
    source: &Path,
    dest_dir: &Path,
    worker_exe: &Path,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<ImportedImage, ImageError> {
    let meta = std::fs::metadata(source).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound {
            path: source.to_path_buf(),
        },
        _ => ImageError::io("stat", source, e),
    })?;
    let mode_flag = if meta.is_dir() {
        "--dir"
    } else {
        detect(source)?;
        "--tarball"
    };
    let source_abs =
        std::path::absolute(source).map_err(|e| ImageError::io("resolve", source, e))?;
    let estimate = (!meta.is_dir()).then(|| unpacked_estimate(meta.len(), detect(source).ok()));
    let args = vec![OsString::from(mode_flag), source_abs.into_os_string()];
    run_build(&args, estimate, dest_dir, worker_exe, on_event)
}

/// Import an image made of OCI layers (bottom first, as blob files with
/// the compression their manifest declares) into `dest_dir`, which must not
/// exist. Layers are applied in order with whiteouts and opaque
/// directories; an unsafe entry fails the import with
/// [`ImageError::Worker`] naming `layer N` (the index in `layers`) and the
/// entry. On error `dest_dir` is left absent and nothing else is written.
pub fn import_layers(
    layers: &[(PathBuf, Compression)],
    dest_dir: &Path,
    worker_exe: &Path,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<ImportedImage, ImageError> {
    if layers.is_empty() {
        return Err(ImageError::NoLayers);
    }
    let mut args = Vec::with_capacity(layers.len() * 3);
    let mut estimate = 0;
    for (path, compression) in layers {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotFound { path: path.clone() },
            _ => ImageError::io("stat", path, e),
        })?;
        if !meta.is_file() {
            return Err(ImageError::UnsupportedFormat { path: path.clone() });
        }
        estimate += unpacked_estimate(meta.len(), Some(*compression));
        let abs = std::path::absolute(path).map_err(|e| ImageError::io("resolve", path, e))?;
        args.push(OsString::from("--layer"));
        args.push(OsString::from(match compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }));
        args.push(abs.into_os_string());
    }
    run_build(&args, Some(estimate), dest_dir, worker_exe, on_event)
}

/// A generous guess of what `len` bytes of archive unpack to: root
/// filesystems compress about 3:1, rarely beyond 5:1.
fn unpacked_estimate(len: u64, compression: Option<Compression>) -> u64 {
    match compression {
        Some(Compression::None) => len + len / 8,
        _ => len.saturating_mul(5),
    }
}

/// Where unpacked trees are staged when they fit in memory: creating
/// ten thousand files on tmpfs takes a fraction of the time it takes on a
/// disk filesystem, and the tree lives only until the base is built.
const MEMORY_STAGING_BASE: &str = "/dev/shm";

/// Setting this to `0` keeps staging on disk.
pub const MEMORY_STAGING_ENV: &str = "BANGER_MEMORY_STAGING";

/// The name prefix of memory staging directories for imports into
/// `images_dir`, so one installation's sweep never touches another's.
pub fn memory_staging_prefix(images_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    images_dir.hash(&mut h);
    format!("banger-staging-{:016x}-", h.finish())
}

/// A private directory on tmpfs for a tree of about `estimate` bytes, if
/// half of both the tmpfs's free space and the available memory hold it.
fn memory_staging(images_dir: &Path, estimate: u64) -> Option<tempfile::TempDir> {
    if std::env::var_os(MEMORY_STAGING_ENV).is_some_and(|v| v == "0") {
        return None;
    }
    let base = Path::new(MEMORY_STAGING_BASE);
    let fs = nix::sys::statfs::statfs(base).ok()?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    let free = fs.blocks_available().saturating_mul(fs.block_size() as u64);
    let memory = mem_available()?;
    if estimate > free / 2 || estimate > memory / 2 {
        return None;
    }
    use std::os::unix::fs::PermissionsExt as _;
    // Private: /dev/shm is shared by every user, and the tree holds the
    // image's files with their modes as the image has them.
    tempfile::Builder::new()
        .prefix(&memory_staging_prefix(images_dir))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
        .ok()
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Remove memory staging directories a killed import into `images_dir`
/// left behind. Call only when no import into `images_dir` is running.
pub fn remove_stale_memory_staging(images_dir: &Path) {
    let prefix = memory_staging_prefix(images_dir);
    let Ok(entries) = std::fs::read_dir(MEMORY_STAGING_BASE) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Run `banger-rootfs build ARGS --out TMP` under fakeroot beside
/// `dest_dir` and rename the result into place on success. An archive of
/// about `estimate` unpacked bytes is staged in memory when it fits.
fn run_build(
    source_args: &[OsString],
    estimate: Option<u64>,
    dest_dir: &Path,
    worker_exe: &Path,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<ImportedImage, ImageError> {
    if dest_dir.symlink_metadata().is_ok() {
        return Err(ImageError::DestinationExists {
            path: dest_dir.to_path_buf(),
        });
    }
    let session = crate::fakeroot::Session::start()?;
    let parent = dest_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Beside the destination, so the final rename stays on one filesystem.
    let build = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(parent)
        .map_err(|e| ImageError::io("create build dir in", parent, e))?;

    let mut cmd = session.command(worker_exe);
    // The worker dies with us, and faked with us too (see `fakeroot`), so
    // no orphan keeps writing or holding IPC objects.
    banger_disk::die_with_parent(&mut cmd);
    let memory = estimate.and_then(|e| memory_staging(parent, e));
    cmd.arg("build");
    if let Some(m) = &memory {
        cmd.arg("--memory-staging").arg(m.path());
    }
    let mut child = cmd
        .args(source_args)
        .arg("--out")
        .arg(build.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::io("spawn fakeroot worker", worker_exe, e))?;
    let stderr_pipe = child.stderr.take();
    // Drain stderr concurrently so a chatty worker cannot block on it.
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = stderr_pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    });
    let mut report = None;
    let mut input_error = false;
    let mut protocol_error = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<WorkerMessage>(&line) {
                Ok(WorkerMessage::Event(ev)) => on_event(ev),
                Ok(WorkerMessage::Done(r)) => report = Some(r),
                Ok(WorkerMessage::Failed(f)) => input_error = f.input,
                Err(e) => {
                    protocol_error.get_or_insert(format!("{line:?}: {e}"));
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| ImageError::io("wait for worker", worker_exe, e))?;
    let stderr = stderr_thread.join().unwrap_or_default();
    if !status.success() {
        let message = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(ImageError::Worker {
            status,
            message,
            stderr,
            input: input_error,
        });
    }
    if let Some(detail) = protocol_error {
        return Err(ImageError::WorkerProtocol { detail });
    }
    let report = report.ok_or_else(|| ImageError::WorkerProtocol {
        detail: "no result reported".into(),
    })?;

    // The unpacked tree is done with once the base is built. On tmpfs it
    // goes now (with `memory`, at the end of this function); on disk it
    // goes aside, to be removed when the caller drops the `Scratch`.
    let staging = build.path().join(STAGING_NAME);
    let trash = (!report.staged_in_memory && staging.exists()).then(|| {
        let trash = parent.join(format!(
            ".{name}.staging-{}",
            build
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        std::fs::rename(&staging, &trash).map(|()| Arc::new(Scratch(trash)))
    });
    let trash = match trash.transpose() {
        Ok(t) => t,
        Err(e) => return Err(ImageError::io("move aside", &staging, e)),
    };
    let build_path = build.keep();
    if let Err(e) = std::fs::rename(&build_path, dest_dir) {
        let _ = std::fs::remove_dir_all(&build_path);
        return Err(ImageError::io("move build into", dest_dir, e));
    }
    Ok(ImportedImage {
        base_path: dest_dir.join(BASE_NAME),
        work_seed_dir: dest_dir.join(SEED_DIR_NAME),
        work_seed_manifest_path: dest_dir.join(SEED_MANIFEST_NAME),
        size_bytes: report.size_bytes,
        has_init: report.has_init,
        staged_in_memory: report.staged_in_memory,
        scratch: trash,
    })
}
