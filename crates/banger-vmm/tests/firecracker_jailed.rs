//! Firecracker under its jailer, as banger runs it: the real `jailer` and
//! `firecracker` built from one tree (`scripts/build-firecracker.sh`),
//! with the seccomp filter built beside them.
//!
//! Firecracker accepts every request banger sends up to and including
//! `InstanceStart`, runs as the owner's uid (here nobody's, 65534, as a
//! non-root owner's would be), with every thread under its seccomp filter,
//! in a chroot that holds only this VM's files (hard links: the guest's
//! writes reach the VM's own disks). Then the warm-start premise: a state
//! saved by one jailed Firecracker names in-chroot paths, so a second one,
//! in another chroot with other disks behind the same names, takes the
//! `/snapshot/load` request. No guest boots on a PVM-only host, so this is
//! as far as the real binaries go here; what KVM refuses is reported.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use banger_testkit::firecracker::{debian_vmlinux, firecracker_bin, jailer_bin};
use banger_vmm::cgroup::{Cgroups, Limits, VmGroups};
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::firecracker::jail::Jailer;
use banger_vmm::{DiskRole, DiskSpec, Driver, Incoming, LaunchSpec, VmmKind};

const OWNER: u32 = 65534;

fn spec(dir: &Path, kernel: &Path, tag: &str) -> LaunchSpec {
    let file = |name: &str, len: u64| {
        let p = dir.join(format!("{tag}-{name}"));
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        std::os::unix::fs::chown(&p, Some(OWNER), Some(OWNER)).unwrap();
        p
    };
    let run_dir = dir.join(format!("run-{tag}"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let disk = |role, name: &str, read_only| DiskSpec {
        role,
        path: file(name, 64 << 20),
        read_only,
    };
    LaunchSpec {
        name: format!("jailed-{tag}"),
        kernel: kernel.into(),
        initramfs: Some(file("initramfs.cpio", 4096)),
        params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
        vcpus: 2,
        memory_mib: 128,
        disks: vec![
            disk(DiskRole::Base, "base.ext4", true),
            disk(DiskRole::Overlay, "overlay.ext4", false),
            disk(DiskRole::Work, "work.ext4", false),
        ],
        tap: None,
        tap_fd: None,
        mac: None,
        console_log: dir.join(format!("{tag}-console.log")),
        console_max: 0,
        cgroup: None,
        agent_socket: dir.join(format!("{tag}-agent.sock")),
        api_socket: dir.join(format!("{tag}-api.sock")),
        vsock_cid: Some(7),
        incoming: None,
        detached_nic: false,
        inject_socket: None,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        run_dir,
    }
}

fn status_field(pid: i32, task: Option<&str>, field: &str) -> String {
    let path = match task {
        Some(t) => format!("/proc/{pid}/task/{t}/status"),
        None => format!("/proc/{pid}/status"),
    };
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Names under `dir`, recursively, as `a`, `a/b`.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn jailed_firecracker_runs_as_the_owner_in_a_chroot_of_its_own() {
    let (Some(bin), Some(jailer)) = (firecracker_bin(), jailer_bin()) else {
        return;
    };
    assert!(
        rustix::process::geteuid().is_root(),
        "the jailer must start as root; run this test as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let Some(vmlinux) = debian_vmlinux(dir.path()) else {
        return;
    };
    let filter = jailer.with_file_name("seccomp-filter.bpf");
    assert!(
        filter.is_file(),
        "no {} beside the jailer",
        filter.display()
    );
    let d = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: Some(Jailer {
            binary: jailer.clone(),
            seccomp_filter: Some(filter),
            chroot_base: dir.path().join("jail"),
            uid: OWNER,
            gid: OWNER,
        }),
    };
    let mut a = spec(dir.path(), &vmlinux, "a");
    // In its cgroup too, where this host offers one (tests/confine.rs
    // checks the limits; here, that the jailer's exec keeps it there).
    let groups = Cgroups::detect();
    let id = format!("jailed-{}", std::process::id());
    if !matches!(groups, Cgroups::Unavailable(_)) {
        a.cgroup = Some(
            groups
                .create(
                    &id,
                    Limits::for_guest(128, VmmKind::Firecracker.memory_overhead_mib(None), 2),
                )
                .unwrap(),
        );
    }
    // Every request, InstanceStart included.
    let h = d
        .spawn(&a)
        .await
        .expect("jailed firecracker takes the start");
    let pid = h.pid;
    // The owner's uid and gid, all four of each.
    assert_eq!(status_field(pid, None, "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(pid, None, "Gid"), "65534\t65534\t65534\t65534");
    if let Some(g) = &a.cgroup {
        assert!(g.holds(pid), "jailed firecracker {pid} left {g:?}");
    }
    // Every thread (main, API, vCPUs) under a seccomp filter.
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tasks.len() >= 4, "{tasks:?}");
    for t in &tasks {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm")).unwrap();
        assert_eq!(
            status_field(pid, Some(t), "Seccomp"),
            "2",
            "thread {t} ({}) has no filter",
            comm.trim()
        );
    }
    // Its root is the chroot, and the chroot holds this VM's files only.
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    let seen = tree(&root);
    let want: BTreeSet<String> = [
        // The jailer's own: its copy of Firecracker and Firecracker's pid.
        "firecracker",
        "firecracker.pid",
        "vmlinux",
        "initramfs",
        "banger-base.ext4",
        "banger-overlay.ext4",
        "banger-work.ext4",
        "seccomp-filter.bpf",
        "state",
        "run",
        "run/firecracker.socket",
        "run/agent.sock",
        "dev",
        "dev/kvm",
        "dev/net",
        "dev/net/tun",
        "dev/urandom",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let extra: Vec<&String> = seen
        .difference(&want)
        .filter(|n| !n.starts_with("dev/userfaultfd"))
        .collect();
    assert!(extra.is_empty(), "more than the VM's files: {extra:?}");
    assert!(
        want.is_subset(&seen),
        "missing: {:?}",
        want.difference(&seen)
    );
    // The disks are the VM's own (links, not copies).
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&root.join("banger-overlay.ext4")),
        ino(&a.disks[1].path)
    );
    eprintln!(
        "jailed firecracker {pid}: uid 65534, {} threads filtered, root {seen:?}",
        tasks.len()
    );

    // A state saved in the chroot lands in the snapshot directory.
    d.pause(&h).await.expect("pause");
    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let saved = d.save_state(&h, &snap, Duration::from_secs(60)).await;
    d.kill(&h).unwrap();
    assert!(banger_vmm::wait_exit(&h, Duration::from_secs(5)).await);
    match saved {
        Ok(()) => {
            for f in ["vmstate.bin", "memory.bin"] {
                assert!(snap.join(f).is_file(), "{f} not moved out of the chroot");
            }
            // Another chroot, other disks, the same in-chroot names.
            let mut b = spec(dir.path(), &vmlinux, "b");
            b.incoming = Some(Incoming { dir: snap.clone() });
            match d.spawn(&b).await {
                Ok(h2) => {
                    eprintln!("a second jailed firecracker loaded the state with its own disks");
                    d.kill(&h2).unwrap();
                }
                Err(e) => {
                    let line = e.to_string();
                    // The request was taken; only KVM on this host can say no.
                    assert!(
                        !line.contains("deserializ") && !line.contains("No such file"),
                        "{line}"
                    );
                    banger_testkit::skip(&format!(
                        "loading a jailed snapshot: this host's KVM refused it ({line})"
                    ));
                }
            }
        }
        Err(e) => banger_testkit::skip(&format!(
            "saving a jailed snapshot: this host's KVM refused it ({e})"
        )),
    }
    if let Some(g) = &a.cgroup {
        g.remove();
    }
    for run in ["run-a", "run-b"] {
        let j = banger_vmm::firecracker::jail::Jail::of(
            d.jailer.as_ref().unwrap(),
            &dir.path().join(run),
        );
        banger_vmm::firecracker::jail::Jail::remove(&j.dir);
    }
}
