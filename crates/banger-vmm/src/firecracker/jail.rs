//! Firecracker under its jailer: a chroot per VM holding only that VM's
//! files, the owner's uid and gid, and Firecracker's seccomp filters.
//!
//! The jailer (built from the same tree as `firecracker`,
//! `scripts/build-firecracker.sh`) must start as root: it makes a mount
//! namespace, pivots into `<chroot_base>/firecracker/<id>/root`, creates
//! `/dev/kvm`, `/dev/net/tun` and `/dev/urandom` there, drops to the uid
//! and gid it is given and execs its own copy of Firecracker, which then
//! installs the filter banger hands it (`--seccomp-filter`; a glibc build
//! carries only an allow-all default). It exec's in place, so the pid we
//! start is Firecracker's.
//!
//! Before that, [`Jail::prepare`] puts the VM's files into the chroot as
//! hard links (so the guest writes to the VM's own disks, and nothing is
//! copied): the kernel, the initramfs, each disk under its role's name,
//! the filter. Firecracker is then configured with those in-chroot names
//! ([`Jail::inner_spec`]), and every VM's disks sit at the same in-chroot
//! paths: a saved state names `/banger-overlay.ext4`, which is this VM's
//! overlay in whichever chroot loads it, so a snapshot restores as a new
//! VM and a boot template serves many (what an unjailed Firecracker,
//! which reopens the host paths saved in its state, cannot do). Saved
//! states are written to and read from `/state/` inside the chroot and
//! moved (or linked) to and from the snapshot's directory.
//!
//! The shared read-only files (kernel, initramfs, base image, modules) are
//! links to the owner's files: their mode keeps Firecracker from writing
//! them, but a Firecracker taken over by its guest runs as the owner and
//! could change that mode. The chroot keeps it from everything else the
//! owner has.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{DiskRole, LaunchSpec};
use crate::{Result, VmmError};

/// In-chroot names.
pub mod inner {
    /// Firecracker's API socket.
    pub const API_SOCKET: &str = "/run/firecracker.socket";
    /// The hybrid vsock's host-side socket.
    pub const AGENT_SOCKET: &str = "/run/agent.sock";
    /// The kernel.
    pub const KERNEL: &str = "/vmlinux";
    /// The initramfs.
    pub const INITRAMFS: &str = "/initramfs";
    /// The compiled seccomp filter.
    pub const SECCOMP_FILTER: &str = "/seccomp-filter.bpf";
    /// Where saved states are written and read.
    pub const STATE_DIR: &str = "/state";
}

/// How to jail Firecracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jailer {
    /// The jailer binary (from the same tree as the Firecracker binary).
    pub binary: PathBuf,
    /// The compiled filter for Firecracker's threads, handed to it with
    /// `--seccomp-filter`; `None` leaves Firecracker's built-in one.
    pub seccomp_filter: Option<PathBuf>,
    /// Per-VM chroots are `<chroot_base>/firecracker/<id>/root`; on the
    /// VMs' files' filesystem, since they are hard-linked in.
    pub chroot_base: PathBuf,
    /// Who Firecracker runs as: the VM's owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

/// One VM's chroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `<chroot_base>/firecracker/<id>`: removed whole when the run ends.
    pub dir: PathBuf,
    /// The chroot itself, `<dir>/root`.
    pub root: PathBuf,
    /// The jailer's `--id`.
    pub id: String,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmmError {
    let path = path.display().to_string();
    move |source| VmmError::Io { op, path, source }
}

/// The in-chroot name of a disk of `role`.
pub fn disk_name(role: DiskRole) -> String {
    format!("/{}.ext4", role.id())
}

/// A jailer id for the VM whose run directory is `run_dir`: its name (a
/// VM id) plus a hash of the whole path, so two run directories never
/// share a chroot. Letters, digits and `-`, at most 64: the jailer's rule.
pub fn jail_id(run_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let name: String = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    run_dir.hash(&mut h);
    format!("{name}-{:016x}", h.finish())
}

impl Jail {
    /// The chroot of the VM whose run directory is `run_dir`.
    pub fn of(jailer: &Jailer, run_dir: &Path) -> Jail {
        let id = jail_id(run_dir);
        let dir = jailer.chroot_base.join("firecracker").join(&id);
        Jail {
            root: dir.join("root"),
            dir,
            id,
        }
    }

    /// The host path of an in-chroot name.
    pub fn host(&self, inner: &str) -> PathBuf {
        self.root.join(inner.trim_start_matches('/'))
    }

    /// Makes the chroot afresh with `spec`'s files linked in.
    pub fn prepare(&self, jailer: &Jailer, spec: &LaunchSpec) -> Result<()> {
        // A chroot left by a run that ended without cleanup.
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &self.dir)(e));
            }
            _ => {}
        }
        let state = self.host(inner::STATE_DIR);
        std::fs::create_dir_all(&state).map_err(io("create", &state))?;
        let mut links: Vec<(PathBuf, String)> = vec![(spec.kernel.clone(), inner::KERNEL.into())];
        if let Some(i) = &spec.initramfs {
            links.push((i.clone(), inner::INITRAMFS.into()));
        }
        for d in &spec.disks {
            links.push((d.path.clone(), disk_name(d.role)));
        }
        for (from, to) in links {
            let to = self.host(&to);
            std::fs::hard_link(&from, &to).map_err(|e| {
                if e.raw_os_error() == Some(libc::EXDEV) {
                    VmmError::InvalidSpec(format!(
                        "{} is on another filesystem than the jailer's chroots ({}): files \
                         are hard-linked into each VM's chroot",
                        from.display(),
                        jailer.chroot_base.display()
                    ))
                } else {
                    io("link into the chroot", &from)(e)
                }
            })?;
        }
        if let Some(filter) = &jailer.seccomp_filter {
            let to = self.host(inner::SECCOMP_FILTER);
            std::fs::copy(filter, &to).map_err(io("copy", filter))?;
        }
        // Firecracker runs as the owner: the state directory is its to
        // write (the jailer gives it the chroot's root and /run itself).
        std::os::unix::fs::chown(&state, Some(jailer.uid), Some(jailer.gid))
            .map_err(io("chown", &state))?;
        Ok(())
    }

    /// `spec` as Firecracker sees it from inside the chroot.
    pub fn inner_spec(&self, spec: &LaunchSpec) -> LaunchSpec {
        let mut s = spec.clone();
        s.kernel = inner::KERNEL.into();
        s.initramfs = spec.initramfs.as_ref().map(|_| inner::INITRAMFS.into());
        for d in &mut s.disks {
            d.path = disk_name(d.role).into();
        }
        s.api_socket = inner::API_SOCKET.into();
        s.agent_socket = inner::AGENT_SOCKET.into();
        s.incoming = spec.incoming.as_ref().map(|_| crate::Incoming {
            dir: inner::STATE_DIR.into(),
        });
        s
    }

    /// Links a saved state (the files of `state_files`) from `dir` into
    /// the chroot's state directory, for a restore.
    pub fn link_state_in(&self, dir: &Path) -> Result<()> {
        for f in [crate::state_files::FC_STATE, crate::state_files::FC_MEMORY] {
            let (from, to) = (dir.join(f), self.host(inner::STATE_DIR).join(f));
            std::fs::hard_link(&from, &to).map_err(io("link into the chroot", &from))?;
        }
        Ok(())
    }

    /// Moves a state Firecracker just saved in the chroot to `dir`.
    pub fn move_state_out(&self, dir: &Path) -> Result<()> {
        for f in [crate::state_files::FC_STATE, crate::state_files::FC_MEMORY] {
            let (from, to) = (self.host(inner::STATE_DIR).join(f), dir.join(f));
            std::fs::rename(&from, &to).map_err(io("move out of the chroot", &from))?;
        }
        Ok(())
    }

    /// The jailer's command line around Firecracker's `fc_args`.
    pub fn args(&self, jailer: &Jailer, firecracker: &str, fc_args: &[String]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--id".into(),
            self.id.clone(),
            "--exec-file".into(),
            firecracker.into(),
            "--uid".into(),
            jailer.uid.to_string(),
            "--gid".into(),
            jailer.gid.to_string(),
            "--chroot-base-dir".into(),
            jailer.chroot_base.display().to_string(),
            "--".into(),
        ];
        a.extend(fc_args.iter().cloned());
        if jailer.seccomp_filter.is_some() {
            a.push("--seccomp-filter".into());
            a.push(inner::SECCOMP_FILTER.into());
        }
        a
    }

    /// Removes the chroot (links only: the VM's files stay).
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_jailers_shape_and_differ_by_path() {
        let a = jail_id(Path::new("/run/a/vms/0123456789abcdef"));
        let b = jail_id(Path::new("/run/b/vms/0123456789abcdef"));
        assert_ne!(a, b);
        for id in [&a, &b, &jail_id(Path::new("/x/run,1 2"))] {
            assert!(id.len() <= 64, "{id}");
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{id}"
            );
        }
        assert!(a.starts_with("0123456789abcdef-"), "{a}");
    }
}
