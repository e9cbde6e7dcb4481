//! A cgroup per VM, so one VM cannot starve the host or its neighbours.
//!
//! Each VMM process starts inside its VM's own group (the child writes
//! itself into `cgroup.procs` between fork and exec, so nothing it
//! allocates is ever charged elsewhere), with `memory` bounded to the
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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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

/// Where VM groups are made on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// cgroup v2: `vm-<id>/` under this delegated group.
    V2 {
        /// The daemon's delegated group.
        base: PathBuf,
    },
    /// cgroup v1: `banger-vm-<id>/` under each of these.
    V1 {
        /// The daemon's group in the `memory` hierarchy.
        memory: PathBuf,
        /// The daemon's group in the `pids` hierarchy.
        pids: PathBuf,
    },
    /// No groups: why.
    Unavailable(String),
}

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

/// The cgroup filesystems this process sees: (root of the mount, the
/// process's own path in it) for v2 and for the v1 `memory` and `pids`
/// hierarchies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Seen {
    v2: Option<PathBuf>,
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
}

/// Reads `/proc/self/cgroup` against `/proc/self/mountinfo`.
fn seen(cgroup: &str, mountinfo: &str) -> Seen {
    let mut own = std::collections::HashMap::new();
    for line in cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/').to_string();
        if ctrls.is_empty() {
            own.insert("".to_string(), path);
        } else {
            for c in ctrls.split(',') {
                own.insert(c.to_string(), path.clone());
            }
        }
    }
    let mut out = Seen::default();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let lf: Vec<&str> = left.split(' ').collect();
        let rf: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount), Some(fstype)) = (lf.get(3), lf.get(4), rf.first()) else {
            continue;
        };
        // A mount of a subtree (a container's cgroupns) maps our path
        // below its root.
        let under = |path: &str| -> Option<PathBuf> {
            let root = root.trim_start_matches('/');
            let rel = path.strip_prefix(root)?.trim_start_matches('/');
            Some(Path::new(mount).join(rel))
        };
        match *fstype {
            "cgroup2" => {
                if let Some(p) = own.get("") {
                    out.v2 = under(p);
                }
            }
            "cgroup" => {
                let opts = rf.get(2).copied().unwrap_or("");
                for (ctrl, slot) in [("memory", &mut out.memory), ("pids", &mut out.pids)] {
                    if opts.split(',').any(|o| o == ctrl)
                        && let Some(p) = own.get(ctrl)
                    {
                        *slot = under(p);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn writable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_ok()
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Cgroups {
    /// Where this process can make VM groups, or why it cannot.
    pub fn detect() -> Cgroups {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::judge(&seen(&cgroup, &mountinfo))
    }

    fn judge(seen: &Seen) -> Cgroups {
        let mut why = Vec::new();
        match &seen.v2 {
            Some(base) => {
                let ctrls = words(&base.join("cgroup.controllers"));
                let has = |c: &str| ctrls.iter().any(|x| x == c);
                if !(has("memory") && has("pids")) {
                    why.push(format!(
                        "cgroup v2 group {} offers no memory and pids controllers (not \
                         delegated)",
                        base.display()
                    ));
                } else if !writable(&base.join("cgroup.subtree_control")) {
                    why.push(format!(
                        "cgroup v2 group {} is not writable by the daemon (not delegated)",
                        base.display()
                    ));
                } else {
                    return Cgroups::V2 { base: base.clone() };
                }
            }
            None => why.push("no cgroup v2 mount".into()),
        }
        match (&seen.memory, &seen.pids) {
            (Some(memory), Some(pids)) if writable(memory) && writable(pids) => {
                return Cgroups::V1 {
                    memory: memory.clone(),
                    pids: pids.clone(),
                };
            }
            (Some(memory), Some(pids)) => why.push(format!(
                "cgroup v1 groups {} and {} are not writable by the daemon",
                memory.display(),
                pids.display()
            )),
            _ => why.push("no cgroup v1 memory and pids hierarchies".into()),
        }
        Cgroups::Unavailable(why.join("; "))
    }

    /// One line for `banger doctor`.
    pub fn describe(&self) -> String {
        match self {
            Cgroups::V2 { base } => format!("cgroup v2, VM groups under {}", base.display()),
            Cgroups::V1 { memory, pids } => format!(
                "cgroup v1 memory and pids, VM groups under {} and {}",
                memory.display(),
                pids.display()
            ),
            Cgroups::Unavailable(why) => format!("none: {why}"),
        }
    }

    /// Makes VM `id`'s group(s) with `limits`. Under v2, first moves this
    /// process into the leaf `bangerd/` and enables the controllers for
    /// the base's children (once).
    pub fn create(&self, id: &str, limits: Limits) -> Result<VmCgroup, CgroupError> {
        let mkdir = |p: &Path| match std::fs::create_dir(p) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err("create", p)(e)),
            _ => Ok(()),
        };
        let write = |p: PathBuf, v: String| std::fs::write(&p, v).map_err(err("write", &p));
        match self {
            Cgroups::V2 { base } => {
                let enabled = words(&base.join("cgroup.subtree_control"));
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

    /// The groups VM `id` has (or had) here, whether or not they exist.
    pub fn groups_of(&self, id: &str) -> VmCgroup {
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

    /// Each group's `cgroup.procs`, open for writing, for [`enter`] in a
    /// child between fork and exec (opening is not async-signal-safe).
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

/// In the child between fork and exec: moves the calling process into the
/// groups whose `cgroup.procs` are `fds` ("0" is the writer itself). Only
/// `write(2)`: async-signal-safe.
pub fn enter(fds: &[RawFd]) -> io::Result<()> {
    for fd in fds {
        // SAFETY: writing a 1-byte static buffer to a descriptor the
        // caller keeps open across the fork.
        let n = unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The raw numbers of `fds`, for [`enter`].
pub fn raw(fds: &[OwnedFd]) -> Vec<RawFd> {
    fds.iter().map(AsRawFd::as_raw_fd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/8b11\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_is_read_as_v1_memory_and_pids_with_a_bare_v2() {
        let s = seen(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(
            s,
            Seen {
                v2: Some("/sys/fs/cgroup/unified".into()),
                memory: Some("/sys/fs/cgroup/memory/process_api/8b11".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
            }
        );
    }

    #[test]
    fn a_v2_host_and_a_container_namespace() {
        let cg = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/bangerd.service\n";
        let mounts = "24 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            seen(cg, mounts).v2,
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/bangerd.service"
            ))
        );
        // A namespace whose mount is rooted at our own group.
        let mounts = "24 1 0:22 /box /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            seen("0::/box/inner\n", mounts).v2,
            Some(PathBuf::from("/sys/fs/cgroup/inner"))
        );
    }

    #[test]
    fn v2_is_used_only_where_delegated_then_v1_then_none_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("v2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(v2.join("cgroup.subtree_control"), "").unwrap();
        let seen_v2 = Seen {
            v2: Some(v2.clone()),
            ..Seen::default()
        };
        assert_eq!(Cgroups::judge(&seen_v2), Cgroups::V2 { base: v2.clone() });
        // Only hugetlb in v2 (this hybrid host): v1 when writable.
        std::fs::write(v2.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let (m, p) = (t.path().join("memory"), t.path().join("pids"));
        std::fs::create_dir(&m).unwrap();
        std::fs::create_dir(&p).unwrap();
        let hybrid = Seen {
            v2: Some(v2.clone()),
            memory: Some(m.clone()),
            pids: Some(p.clone()),
        };
        assert_eq!(Cgroups::judge(&hybrid), Cgroups::V1 { memory: m, pids: p });
        let none = Seen {
            v2: Some(v2),
            ..Seen::default()
        };
        let Cgroups::Unavailable(why) = Cgroups::judge(&none) else {
            panic!("expected none");
        };
        assert!(
            why.contains("not delegated") && why.contains("no cgroup v1"),
            "{why}"
        );
    }

    #[test]
    fn limits_cover_the_guest_and_the_vmm() {
        let l = Limits::for_guest(256, 192, 2);
        assert_eq!(l.memory_bytes, 448 << 20);
        assert_eq!(l.pids, 130);
    }
}
