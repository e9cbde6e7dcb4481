//! Which cgroups this host offers for confining VMs, as this process
//! sees them: cgroup v2 where the host delegates a group with the
//! `memory` and `pids` controllers to us, else the cgroup v1 `memory` and
//! `pids` hierarchies where our groups in them are writable, else none
//! (and why). `banger doctor` reports it; banger-vmm makes each VM's
//! group from it (`banger_vmm::cgroup`).

use std::path::{Path, PathBuf};

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

pub fn words(path: &Path) -> Vec<String> {
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
}
