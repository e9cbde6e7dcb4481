//! [`import_rootfs`] and [`import_layers`]: the daemon-side half of an
//! import. They validate the source, run the `banger-rootfs` worker under `fakeroot` in a temporary
//! directory beside the destination, relays the worker's progress, and
//! renames the result into place only when everything succeeded.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ImageError;
use crate::event::{ImportEvent, WorkerMessage};
use crate::source::{Compression, detect};
use crate::worker::{BASE_NAME, SEED_DIR_NAME, SEED_MANIFEST_NAME};

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
    let args = vec![OsString::from(mode_flag), source_abs.into_os_string()];
    run_build(&args, dest_dir, worker_exe, on_event)
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
    for (path, compression) in layers {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ImageError::NotFound { path: path.clone() },
            _ => ImageError::io("stat", path, e),
        })?;
        if !meta.is_file() {
            return Err(ImageError::UnsupportedFormat { path: path.clone() });
        }
        let abs = std::path::absolute(path).map_err(|e| ImageError::io("resolve", path, e))?;
        args.push(OsString::from("--layer"));
        args.push(OsString::from(match compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }));
        args.push(abs.into_os_string());
    }
    run_build(&args, dest_dir, worker_exe, on_event)
}

/// Run `banger-rootfs build ARGS --out TMP` under fakeroot beside
/// `dest_dir` and rename the result into place on success.
fn run_build(
    source_args: &[OsString],
    dest_dir: &Path,
    worker_exe: &Path,
    on_event: &mut dyn FnMut(ImportEvent),
) -> Result<ImportedImage, ImageError> {
    if dest_dir.symlink_metadata().is_ok() {
        return Err(ImageError::DestinationExists {
            path: dest_dir.to_path_buf(),
        });
    }
    let fakeroot = find_in_path("fakeroot").ok_or(ImageError::ToolMissing {
        tool: "fakeroot",
        package: "fakeroot",
    })?;
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

    let mut cmd = Command::new(&fakeroot);
    // fakeroot's shell dies with us; the worker dies with fakeroot's shell
    // (it sets the same signal on itself), so no orphan keeps writing.
    banger_disk::die_with_parent(&mut cmd);
    let mut child = cmd
        .arg("--")
        .arg(worker_exe)
        .arg("build")
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
    let mut protocol_error = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<WorkerMessage>(&line) {
                Ok(WorkerMessage::Event(ev)) => on_event(ev),
                Ok(WorkerMessage::Done(r)) => report = Some(r),
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
        });
    }
    if let Some(detail) = protocol_error {
        return Err(ImageError::WorkerProtocol { detail });
    }
    let report = report.ok_or_else(|| ImageError::WorkerProtocol {
        detail: "no result reported".into(),
    })?;

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
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
