//! Builds the banger initramfs for one kernel: the static `banger-agent` as
//! `/init`, the kernel modules it must load (virtio disks, console ports,
//! network, vsock, overlayfs), their ordered list, and the empty directories
//! and `/dev/console` node the agent expects.
//!
//! Dependencies between modules come from each module's own `.modinfo`
//! `depends=` field rather than `modules.dep`: Debian's `linux-image-*`
//! packages ship no `modules.dep` (depmod runs at install time), and the
//! field is what modpost derived from the same symbol resolution.
//! Modules built into the kernel (`modules.builtin`) are skipped.
//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed here
//! so the agent can use plain `finit_module(2)` without decompressors.
//!
//! The archive is written by [`cpio`] (newc), not the `cpio` crate: the
//! format is 110-byte ASCII headers and 4-byte padding, and we need device
//! nodes and fixed metadata (uid 0, mtime 0) for reproducible output — a
//! hundred lines we can test beat a thinly maintained dependency.
//!
//! It does not download kernels, pick where the result is cached, or know
//! about VMMs; [`cache_key`] gives callers a key for their cache.

pub mod cpio;
mod modules;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use modules::{ResolvedModule, resolve};

/// Modules the agent needs on a virtio-mmio machine, by module name.
/// Names that are built into a kernel are skipped for it.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    // Memory given back to the host: free page reporting and `vm set
    // --memory` (the VMMs give every VM a balloon).
    "virtio_balloon",
    "overlay",
    "ext4",
];

/// Bumped when the layout of the archive changes, so caches keyed by
/// [`cache_key`] are invalidated.
const LAYOUT_VERSION: &str = "banger-initramfs/1";

/// Where, inside the archive, the agent reads the ordered module list.
pub const MODULE_LIST_PATH: &str = "lib/modules/banger.list";

/// Errors of the initramfs builder.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// Reading an input failed.
    #[error("read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The modules could not be resolved: a wanted one is neither a file
    /// nor built in, a dependency is missing, a file is unreadable.
    #[error(transparent)]
    Modules(#[from] banger_kernel::KernelError),
}

type Result<T, E = InitramfsError> = std::result::Result<T, E>;

/// Compression of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain cpio: larger, but the kernel unpacks it without inflating,
    /// which under TCG is the faster choice (see the crate's tests).
    #[default]
    None,
    /// gzip (level 6).
    Gzip,
}

/// What [`build`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsInfo {
    /// The archive.
    pub path: PathBuf,
    /// Kernel release (name of the modules directory), when modules were given.
    pub kernel_release: Option<String>,
    /// Module names in load order.
    pub modules: Vec<String>,
    /// Size of the archive in bytes.
    pub size: u64,
    /// The key of this build, as [`cache_key`] computes it.
    pub cache_key: String,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn release_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn resolve_in(modules_dir: Option<&Path>, wanted: &[&str]) -> Result<Vec<ResolvedModule>> {
    match modules_dir {
        Some(dir) => resolve(dir, wanted),
        None => Ok(Vec::new()),
    }
}

fn key_of(agent: &[u8], release: Option<&str>, mods: &[ResolvedModule]) -> String {
    let mut h = Sha256::new();
    h.update(LAYOUT_VERSION);
    h.update([0]);
    h.update(Sha256::digest(agent));
    h.update(release.unwrap_or("").as_bytes());
    h.update([0]);
    for m in mods {
        h.update(m.name.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(&m.contents));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A key for caching the initramfs built from these inputs: sha256 of the
/// agent binary, the kernel release and the resolved modules' contents.
/// Costs a module resolution (reads and decompresses a few modules).
pub fn cache_key(agent: &Path, modules_dir: Option<&Path>, wanted: &[&str]) -> Result<String> {
    let agent = read(agent)?;
    let mods = resolve_in(modules_dir, wanted)?;
    let release = modules_dir.map(release_of);
    Ok(key_of(&agent, release.as_deref(), &mods))
}

/// Builds an uncompressed initramfs; see [`build_with`].
pub fn build(
    agent: &Path,
    modules_dir: Option<&Path>,
    wanted: &[&str],
    out: &Path,
) -> Result<InitramfsInfo> {
    build_with(agent, modules_dir, wanted, out, Compression::None)
}

/// Builds the initramfs at `out` (atomically: written beside it, then
/// renamed). `modules_dir` is a kernel's `lib/modules/<release>` directory;
/// `None` builds an agent-only archive for a kernel with everything built
/// in.
pub fn build_with(
    agent: &Path,
    modules_dir: Option<&Path>,
    wanted: &[&str],
    out: &Path,
    compression: Compression,
) -> Result<InitramfsInfo> {
    let agent_bytes = read(agent)?;
    let mods = resolve_in(modules_dir, wanted)?;
    let release = modules_dir.map(release_of);

    let mut w = cpio::Writer::new(Vec::new());
    let wr = |e| InitramfsError::Write {
        path: out.to_owned(),
        source: e,
    };
    for d in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "newroot",
        "mnt",
        "mnt/base",
        "mnt/overlay",
        "lib",
        "lib/modules",
    ] {
        w.dir(d, 0o755).map_err(wr)?;
    }
    // The kernel opens /dev/console for init's stdio before init runs, so
    // the node must be in the archive, not left to devtmpfs.
    w.char_device("dev/console", 0o600, 5, 1).map_err(wr)?;
    w.file("init", 0o755, &agent_bytes).map_err(wr)?;

    let mut list = String::new();
    if let Some(rel) = &release {
        let mut made = std::collections::BTreeSet::new();
        for m in &mods {
            let rel_path = format!("{rel}/{}", m.rel_path);
            // Parent directories first, each once.
            let mut prefix = String::from("lib/modules");
            let parts: Vec<&str> = rel_path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                prefix = format!("{prefix}/{part}");
                if made.insert(prefix.clone()) {
                    w.dir(&prefix, 0o755).map_err(wr)?;
                }
            }
            w.file(&format!("lib/modules/{rel_path}"), 0o644, &m.contents)
                .map_err(wr)?;
            list.push_str(&rel_path);
            list.push('\n');
        }
    }
    w.file(MODULE_LIST_PATH, 0o644, list.as_bytes())
        .map_err(wr)?;
    let archive = w.finish().map_err(wr)?;

    // A name of this build's own: two builds of the same archive at once
    // (two processes, or two threads) must not rename each other's file.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let write_out = |bytes: &[u8]| -> io::Result<()> {
        let written = fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        // A full disk must not leave half an archive behind.
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, out)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    };
    let bytes = match compression {
        Compression::None => archive,
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            enc.write_all(&archive).map_err(wr)?;
            enc.finish().map_err(wr)?
        }
    };
    write_out(&bytes).map_err(wr)?;

    Ok(InitramfsInfo {
        path: out.to_owned(),
        cache_key: key_of(&agent_bytes, release.as_deref(), &mods),
        kernel_release: release,
        modules: mods.into_iter().map(|m| m.name).collect(),
        size: bytes.len() as u64,
    })
}
