//! `vmm = "firecracker"` through the real `banger` and `bangerd` with a
//! real Firecracker (`BANGER_FIRECRACKER_BIN`, from
//! `scripts/build-firecracker.sh`).
//!
//! Where KVM cannot boot a standard kernel (PVM-only, as on banger's CI
//! machines) `vm start` must fail within a bounded time, say why, and leave
//! nothing behind. Where KVM can, a VM boots, runs commands, stops,
//! restarts, is killed, and survives a `kill -9` of the daemon; on other
//! hosts that test reports itself skipped with the reason.
//! `scripts/test-firecracker.sh` runs exactly the boot tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_testkit::firecracker::{firecracker_bin, jailer_bin, kvm_boots_standard_kernels};
use banger_testkit::{TestHome, agent_bin, busybox_rootfs, kernel_deb, procs, skip};

/// A home whose VMs run under Firecracker `bin`, jailed by `jailer` (the
/// tests run as root, so the daemon runs the jailer itself).
fn firecracker_home(bin: &Path, jailer: &Path) -> TestHome {
    TestHome::with_config(&format!(
        "vmm = \"firecracker\"\n[binaries]\nfirecracker = \"{}\"\njailer = \"{}\"\n",
        bin.display(),
        jailer.display()
    ))
}

fn busybox_image(home: &TestHome) {
    let root = home.path().join("busybox");
    busybox_rootfs(&root);
    home.ok(&[
        "image",
        "import",
        root.to_str().unwrap(),
        "--name",
        "busybox",
    ]);
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// On a host whose KVM cannot boot the kernel, `vm start` under a jailed
/// Firecracker (every request taken, InstanceStart included) fails within
/// a bound, naming the reason, with no VMM, socket, run file or chroot
/// left and the VM recorded stopped.
#[test]
fn firecracker_start_fails_fast_where_kvm_cannot_boot() {
    let (Some(bin), Some(jailer)) = (firecracker_bin(), jailer_bin()) else {
        return;
    };
    if agent_bin().is_none() {
        return;
    }
    // The reason the Firecracker driver gives, read the same way.
    let Some(why) = banger_vmm::kvm_limitation() else {
        skip(
            "KVM here boots standard kernels, so a Firecracker start does not fail; \
             firecracker_vm_lifecycle covers this host",
        );
        return;
    };
    let home = firecracker_home(&bin, &jailer);
    let Some(vmlinux) = banger_testkit::firecracker::debian_vmlinux(home.path()) else {
        return;
    };
    home.ok(&["kernel", "import", vmlinux.to_str().unwrap()]);
    busybox_image(&home);
    home.ok(&[
        "vm", "create", "busybox", "--name", "fc", "--cpus", "1", "--memory", "256M",
    ]);
    let vm = home.json(&["vm", "show", "fc", "--json"]);
    let id = vm["id"].as_str().unwrap().to_string();
    let run_dir = home.data_dir().join("run/vms").join(&id);

    let t = Instant::now();
    let start = home
        .banger_std()
        .args(["vm", "start", "fc"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it waits for the agent: Firecracker runs in a chroot holding
    // this VM's files, no host directory. (The jailer names the VM too,
    // before it enters the chroot and becomes Firecracker: wait for that.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let jailed = procs::mentioning(&id).into_iter().find(|pid| {
            let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let inside =
                root.iter().any(|n| n == "banger-overlay.ext4") && !root.iter().any(|n| n == "etc");
            if !inside && !root.is_empty() {
                seen = root;
            }
            inside
        });
        if jailed.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no firecracker of vm {id} in its chroot; a process naming it sees {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = start.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let err = stderr
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let took = t.elapsed();
    eprintln!("vm start failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(err.contains("did not come up"), "{err}");
    assert!(err.contains(why), "the error says why: {err}");
    assert!(
        err.contains("vmm = \"qemu\""),
        "the error says what to do: {err}"
    );

    // A jailed Firecracker names the VM by its chroot, `<id>-<hash>`.
    assert_eq!(
        procs::mentioning(&id),
        Vec::<u32>::new(),
        "a firecracker is left"
    );
    assert_eq!(
        files_under(&run_dir),
        Vec::<PathBuf>::new(),
        "run dir not clean"
    );
    assert_eq!(
        files_under(&home.data_dir().join("jail")),
        Vec::<PathBuf>::new(),
        "the VM's chroot is left"
    );
    let vm = home.json(&["vm", "show", "fc", "--json"]);
    assert_eq!(vm["desired_state"], "stopped");
    assert!(
        !Path::new(vm["dir"].as_str().unwrap())
            .join("handles.json")
            .exists()
    );
    // The record is whole: it can be removed like any stopped VM.
    home.ok(&["vm", "rm", "fc"]);

    // And doctor said so before anyone tried.
    let out = home.banger().args(["doctor", "--json"]).output().unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vmm = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vmm")
        .unwrap();
    assert_eq!(vmm["status"], "fail", "{vmm}");
    assert!(
        vmm["detail"].as_str().unwrap().contains("will not boot"),
        "{vmm}"
    );
    // And that Firecracker runs jailed, with the filter built beside it.
    let jail = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "jailer")
        .unwrap();
    assert_eq!(jail["status"], "pass", "{jail}");
    assert!(
        jail["detail"]
            .as_str()
            .unwrap()
            .contains("seccomp-filter.bpf"),
        "{jail}"
    );
}

/// The VMM pid of a running VM, from its handles.
fn vmm_pid(home: &TestHome, vm: &str) -> i64 {
    let h = home.vm_handles(vm).expect("a running VMM");
    assert_eq!(h["driver"], "firecracker");
    h["pid"].as_i64().unwrap()
}

/// Boot, exec, stop, start, restart, re-adopt after `kill -9` of the daemon,
/// kill: the whole life of a Firecracker VM. Needs KVM that boots standard
/// kernels, and Debian's kernel imported with its modules (banger derives
/// the vmlinux Firecracker loads).
#[test]
fn firecracker_vm_lifecycle() {
    let (Some(bin), Some(jailer)) = (firecracker_bin(), jailer_bin()) else {
        return;
    };
    if !kvm_boots_standard_kernels() {
        return;
    }
    let (Some(deb), Some(_)) = (kernel_deb(), agent_bin()) else {
        return;
    };
    let home = firecracker_home(&bin, &jailer);
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    busybox_image(&home);
    home.ok(&[
        "vm", "create", "busybox", "--name", "fc", "--cpus", "1", "--memory", "256M",
    ]);
    let report = home.json(&["vm", "start", "fc", "--json"]);
    assert_eq!(report["vmm"], "firecracker");
    assert_eq!(report["vm"]["desired_state"], "running");
    let out = home.ok(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "echo kept > /root/state; sync; uname -r",
    ]);
    assert!(out.trim().ends_with("-cloud-amd64"), "{out}");

    home.ok(&["vm", "stop", "fc"]);
    assert_eq!(
        home.json(&["vm", "show", "fc", "--json"])["desired_state"],
        "stopped"
    );
    home.ok(&["vm", "start", "fc"]);
    assert_eq!(
        home.ok(&["vm", "exec", "fc", "--", "cat", "/root/state"]),
        "kept\n"
    );

    let before = vmm_pid(&home, "fc");
    home.ok(&["vm", "restart", "fc"]);
    let pid = vmm_pid(&home, "fc");
    assert_ne!(pid, before, "restart runs a new VMM");

    home.kill_daemon();
    // The next command starts a new daemon, which re-adopts the live VM.
    assert_eq!(
        home.ok(&["vm", "exec", "fc", "--", "echo", "still here"]),
        "still here\n"
    );
    assert_eq!(vmm_pid(&home, "fc"), pid, "the same VMM, not a new boot");

    home.ok(&["vm", "kill", "fc"]);
    assert!(!procs::alive(pid), "firecracker {pid} still alive");
    assert_eq!(
        home.json(&["vm", "show", "fc", "--json"])["desired_state"],
        "stopped"
    );
    home.ok(&["vm", "rm", "fc"]);
}
