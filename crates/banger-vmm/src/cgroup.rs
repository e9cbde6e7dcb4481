//! A cgroup per VM, so one VM cannot starve the host or its neighbours.
//!
//! Each VMM process is moved into its VM's own group as it starts, before
//! its guest runs (`crate::child`), with `memory` bounded to the
//! guest's RAM plus the VMM's overhead and `pids` bounded, so a VMM (or a
//! guest that breaks out into it) can neither exhaust host memory nor
//! fork without end. Where the groups come from ([`Cgroups::detect`]):
//!
//! - **cgroup v2 where the host delegates it**: the daemon's own group
//!   offers `memory` and `pids` and is writable by it (a systemd unit with
//!   `Delegate=`, as `banger system install` writes). The daemon moves
//!   itself into a leaf `bangerd/` (a v2 group with controllers enabled
//!   for its children may hold no process itself) and makes `vm-<id>/`
//!   beside it with `memory.max` and `pids.max`.
//! - **cgroup v1** otherwise, when the `memory` and `pids` hierarchies are
//!   mounted and the daemon's groups in them are writable (root on a
//!   v1 or hybrid host): `banger-vm-<id>/` under each, with
//!   `memory.limit_in_bytes` and `pids.max`.
//! - **none** otherwise: `banger doctor` says why, and so does `vm show`
//!   of each VM; the VM runs without limits.
//!
//! Groups outlive the daemon with their VMMs and are removed when the VM's
//! run ends (an empty group is removed with `rmdir`).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The limits of one VM's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory the VMM (guest RAM and its own) may use.
    pub memory_bytes: u64,
    /// Processes and threads it may have.
    pub pids: u64,
}

impl Limits {
    /// For a guest of `memory_mib` MiB and `vcpus`: the guest's RAM plus
    /// `overhead_mib` for the VMM itself; threads for the vCPUs, the
    /// VMM's own and its I/O pool (QEMU's `aio=threads` runs up to 64).
    pub fn for_guest(memory_mib: u32, overhead_mib: u32, vcpus: u8) -> Limits {
        Limits {
            memory_bytes: (u64::from(memory_mib) + u64::from(overhead_mib)) << 20,
            pids: 128 + u64::from(vcpus),
        }
    }
}

pub use banger_config::cgroups::Cgroups;

/// A cgroup error, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cgroup: {op} {path}")]
pub struct CgroupError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError { op, path, source }
}

/// Making and finding VM groups where [`Cgroups`] says they go.
pub trait VmGroups {
    /// Makes VM `id`'s group(s) with `limits`. Under v2, first moves this
    /// process into the leaf `bangerd/` and enables the controllers for
    /// the base's children (once).
    fn create(&self, id: &str, limits: Limits) -> Result<VmCgroup, CgroupError>;
    /// The groups VM `id` has (or had) here, whether or not they exist.
    fn groups_of(&self, id: &str) -> VmCgroup;
}

impl VmGroups for Cgroups {
    fn create(&self, id: &str, limits: Limits) -> Result<VmCgroup, CgroupError> {
        let mkdir = |p: &Path| match std::fs::create_dir(p) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err("create", p)(e)),
            _ => Ok(()),
        };
        let write = |p: PathBuf, v: String| std::fs::write(&p, v).map_err(err("write", &p));
        match self {
            Cgroups::V2 { base } => {
                let enabled = banger_config::cgroups::words(&base.join("cgroup.subtree_control"));
                if !["memory", "pids"]
                    .iter()
                    .all(|c| enabled.iter().any(|e| e == c))
                {
                    let leaf = base.join("bangerd");
                    mkdir(&leaf)?;
                    write(leaf.join("cgroup.procs"), std::process::id().to_string())?;
                    write(base.join("cgroup.subtree_control"), "+memory +pids".into())?;
                }
                let dir = base.join(format!("vm-{id}"));
                mkdir(&dir)?;
                write(dir.join("memory.max"), limits.memory_bytes.to_string())?;
                write(dir.join("pids.max"), limits.pids.to_string())?;
                Ok(VmCgroup {
                    dirs: vec![dir],
                    limits: Some(limits),
                })
            }
            Cgroups::V1 { memory, pids } => {
                let (m, p) = (
                    memory.join(format!("banger-vm-{id}")),
                    pids.join(format!("banger-vm-{id}")),
                );
                mkdir(&m)?;
                mkdir(&p)?;
                write(
                    m.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                )?;
                write(p.join("pids.max"), limits.pids.to_string())?;
                Ok(VmCgroup {
                    dirs: vec![m, p],
                    limits: Some(limits),
                })
            }
            Cgroups::Unavailable(why) => Err(CgroupError {
                op: "unavailable",
                path: PathBuf::new(),
                source: io::Error::other(why.clone()),
            }),
        }
    }

    fn groups_of(&self, id: &str) -> VmCgroup {
        let dirs = match self {
            Cgroups::V2 { base } => vec![base.join(format!("vm-{id}"))],
            Cgroups::V1 { memory, pids } => vec![
                memory.join(format!("banger-vm-{id}")),
                pids.join(format!("banger-vm-{id}")),
            ],
            Cgroups::Unavailable(_) => Vec::new(),
        };
        VmCgroup { dirs, limits: None }
    }
}

/// One VM's group(s): one directory under v2, one per hierarchy under v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCgroup {
    /// The group directories.
    pub dirs: Vec<PathBuf>,
    /// The limits set on them.
    #[serde(default)]
    pub limits: Option<Limits>,
}

impl VmCgroup {
    /// One line for `vm show`: the groups and their limits.
    pub fn describe(&self) -> String {
        let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        match self.limits {
            Some(l) => format!(
                "cgroup {} (memory {} MiB, {} pids)",
                dirs.join(" + "),
                l.memory_bytes >> 20,
                l.pids
            ),
            None => format!("cgroup {}", dirs.join(" + ")),
        }
    }

    /// Each group's `cgroup.procs`, open for writing, opened before the
    /// VMM starts (so a failure stops the start) for [`enter_pid`].
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(err("open", &p))
            })
            .collect()
    }

    /// Whether `pid` is in every one of the groups.
    pub fn holds(&self, pid: i32) -> bool {
        !self.dirs.is_empty()
            && self.dirs.iter().all(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .is_ok_and(|s| s.lines().any(|l| l.trim() == pid.to_string()))
            })
    }

    /// Removes the groups once their processes are gone. A VMM that just
    /// exited counts until its parent reaps it (`rmdir` says EBUSY), which
    /// takes moments: retried for up to a second; a group still holding a
    /// live process is left.
    pub fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Moves process `pid` (all its threads) into the groups whose
/// `cgroup.procs` are open as `fds`.
pub fn enter_pid(fds: &[OwnedFd], pid: i32) -> io::Result<()> {
    use std::io::Write;
    for fd in fds {
        let mut f = std::fs::File::from(fd.try_clone()?);
        f.write_all(pid.to_string().as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cover_the_guest_and_the_vmm() {
        let l = Limits::for_guest(256, 192, 2);
        assert_eq!(l.memory_bytes, 448 << 20);
        assert_eq!(l.pids, 130);
    }
}
