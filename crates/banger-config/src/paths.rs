//! Every path banger uses, derived from the data directory and the runtime
//! directory. Deterministic: the same id always maps to the same place, so a
//! record needs no path that cannot be recomputed, and cleanup after a crash
//! knows where to look.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Layout {
    /// The runtime dir, in this order:
    /// - `/run/bangerd-<uid>/<key>` when `/run/bangerd-<uid>` is a
    ///   directory of this uid: the one `banger system install`'s daemon
    ///   unit gives the owner's daemon ([`system_runtime_dir`]). A CLI in a
    ///   login session and the unit-started daemon then agree on one socket
    ///   and one lock whatever `XDG_RUNTIME_DIR` each has;
    /// - `$XDG_RUNTIME_DIR/banger/<key>` when that variable names an
    ///   existing directory;
    /// - `<data_dir>/run` (CI, `su`, cron).
    ///
    /// `<key>` names the data dir, so two data dirs of one login session get
    /// two daemons, each with its own socket and lock.
    pub fn new(data_dir: PathBuf) -> Self {
        let system = system_runtime_dir(rustix::process::geteuid().as_raw());
        let xdg = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::with_runtime_roots(data_dir, &system, xdg)
    }

    /// [`Self::new`] with the system directory and `XDG_RUNTIME_DIR` given.
    pub fn with_runtime_roots(data_dir: PathBuf, system: &Path, xdg: Option<PathBuf>) -> Self {
        // One spelling, one daemon: `/a/b/`, `/a/./b` and a link to it are
        // all `/a/b` ([`crate::datadir::canonical`]).
        let data_dir = crate::datadir::canonical(&data_dir);
        let key = runtime_key(&data_dir);
        let runtime_dir = if owned_dir(system) {
            system.join(&key)
        } else {
            xdg.filter(|p| p.is_dir())
                .map(|p| p.join("banger").join(&key))
                .unwrap_or_else(|| data_dir.join("run"))
        };
        Self {
            data_dir,
            runtime_dir,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("bangerd.sock")
    }
    /// Held (flock) by the running daemon, in the data dir itself: one
    /// daemon per data dir whatever runtime dir each was started with. It
    /// holds the daemon's pid and socket, so a CLI whose runtime dir
    /// differs still finds it.
    pub fn lock_file(&self) -> PathBuf {
        self.data_dir.join("bangerd.lock")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.data_dir.join("bangerd.log")
    }
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    pub fn image_dir(&self, id: &str) -> PathBuf {
        self.images_dir().join(id)
    }
    pub fn kernels_dir(&self) -> PathBuf {
        self.data_dir.join("kernels")
    }
    pub fn kernel_dir(&self, id: &str) -> PathBuf {
        self.kernels_dir().join(id)
    }
    pub fn vms_dir(&self) -> PathBuf {
        self.data_dir.join("vms")
    }
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }
    /// Content-addressed cache of registry blobs, shared by all images.
    pub fn blobs_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }
    /// Scratch space for operations in flight; emptied at daemon start.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// banger's own SSH files: the managed user key and the known_hosts
    /// file `vm ssh` checks host keys against (never the user's own).
    pub fn ssh_dir(&self) -> PathBuf {
        self.data_dir.join("ssh")
    }
    /// The managed ed25519 private key (`.pub` beside it).
    pub fn ssh_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    /// Create the directories the daemon writes to, private to the user,
    /// and refuse a data dir another user could reach into
    /// ([`crate::datadir`]).
    pub fn ensure(&self) -> Result<(), crate::datadir::DataDirError> {
        use std::os::unix::fs::DirBuilderExt;
        let dirs = [
            self.data_dir.clone(),
            self.runtime_dir.clone(),
            self.images_dir(),
            self.kernels_dir(),
            self.vms_dir(),
            self.blobs_dir(),
            self.tmp_dir(),
            self.ssh_dir(),
        ];
        for (i, dir) in dirs.iter().enumerate() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| crate::datadir::DataDirError::Io {
                    op: "create",
                    path: dir.clone(),
                    source,
                })?;
            // Nothing is made inside a data dir before it is judged ours.
            if i == 0 {
                crate::datadir::check_ancestors(&self.data_dir)?;
            }
            crate::datadir::check_own(dir)?;
        }
        Ok(())
    }
}

/// The runtime directory systemd gives the daemon of a system install
/// (`RuntimeDirectory=` of `bangerd@.service`): `/run/bangerd-<uid>`.
pub fn system_runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/bangerd-{uid}"))
}

/// A directory owned by this process's uid: only root can create one
/// under /run, so a directory there owned by us was made for us.
fn owned_dir(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_dir() && m.uid() == rustix::process::geteuid().as_raw())
}

/// 16 hex characters of the data dir's SHA-256: short enough for the
/// 108-byte limit of a socket path, stable across runs and versions.
fn runtime_key(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Per-VM file names inside [`Layout::vm_dir`].
pub mod vm_files {
    pub const OVERLAY_DISK: &str = "overlay.ext4";
    pub const WORK_DISK: &str = "work.ext4";
    pub const HANDLES: &str = "handles.json";
    pub const CONSOLE_LOG: &str = "console.log";
    /// A suspended VM's saved guest (the VMM's state files): present and
    /// whole exactly while the VM is suspended.
    pub const SUSPEND: &str = "suspend";
    /// A suspend's state while it is written; renamed to [`SUSPEND`] when
    /// whole.
    pub const SUSPEND_TMP: &str = "suspend.tmp";
    /// A suspended VM's state while a wake loads it; removed before the
    /// guest runs, renamed back to [`SUSPEND`] when the wake fails first.
    pub const SUSPEND_WAKING: &str = "suspend.waking";
}

/// Per-image file names inside [`Layout::image_dir`].
pub mod image_files {
    pub const BASE: &str = "rootfs.ext4";
    pub const WORK_SEED_DIR: &str = "work-seed";
}

/// The manifest recording the true owners of a work seed directory:
/// `work-seed.json` beside `work-seed/`.
pub fn seed_manifest(seed_dir: &Path) -> PathBuf {
    let mut name = seed_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    seed_dir.with_file_name(name)
}

/// Make `path` absolute against `cwd` without touching the filesystem.
pub fn absolutize(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

/// The name `vm ssh` gives OpenSSH (`HostKeyAlias`) for VM `id`'s host key
/// in banger's known_hosts: tied to the id, so it holds whatever address or
/// transport (bridge or agent proxy) reaches the VM.
pub fn ssh_host_alias(id: &str) -> String {
    format!("banger-vm-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_key_names_the_data_dir() {
        let a = runtime_key(Path::new("/tmp/a"));
        assert_eq!(a.len(), 16);
        assert_eq!(a, runtime_key(Path::new("/tmp/a")));
        assert_ne!(a, runtime_key(Path::new("/tmp/b")));
    }

    #[test]
    fn a_system_install_dir_wins_over_xdg_runtime_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let system = tmp.path().join("bangerd-1000");
        let xdg = tmp.path().join("user");
        std::fs::create_dir(&xdg).unwrap();
        let data = PathBuf::from("/home/a/.local/share/banger");
        let key = runtime_key(&data);
        let l = Layout::with_runtime_roots(data.clone(), &system, Some(xdg.clone()));
        assert_eq!(l.runtime_dir, xdg.join("banger").join(&key));
        // The unit's directory exists (owned by us, as systemd makes it).
        std::fs::create_dir(&system).unwrap();
        let l = Layout::with_runtime_roots(data.clone(), &system, Some(xdg.clone()));
        assert_eq!(l.runtime_dir, system.join(&key));
        let l = Layout::with_runtime_roots(data.clone(), &system, None);
        assert_eq!(l.runtime_dir, system.join(&key));
        std::fs::remove_dir(&system).unwrap();
        let l = Layout::with_runtime_roots(data.clone(), &system, None);
        assert_eq!(l.runtime_dir, data.join("run"));
    }

    #[test]
    fn data_dir_spellings_are_one_data_dir() {
        let plain = Layout::new(PathBuf::from("/tmp/x/data"));
        for other in ["/tmp/x/data/", "/tmp/x/./data"] {
            assert_eq!(Layout::new(PathBuf::from(other)), plain);
        }
    }
}
