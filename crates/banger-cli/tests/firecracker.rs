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

use banger_testkit::firecracker::{firecracker_bin, kvm_boots_standard_kernels};
use banger_testkit::{TestHome, agent_bin, busybox_rootfs, kernel_deb, procs, skip};

fn firecracker_home(bin: &Path) -> TestHome {
    TestHome::with_config(&format!(
        "vmm = \"firecracker\"\n[binaries]\nfirecracker = \"{}\"\n",
        bin.display()
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

/// On a host whose KVM cannot boot the kernel, `vm start` under
/// Firecracker fails within a bound, naming the reason, with no VMM,
/// socket or run file left and the VM recorded stopped.
#[test]
fn firecracker_start_fails_fast_where_kvm_cannot_boot() {
    let Some(bin) = firecracker_bin() else { return };
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
    let home = firecracker_home(&bin);
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
    let err = home.fails(&["vm", "start", "fc"]);
    let took = t.elapsed();
    eprintln!("vm start failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {err}");
    assert!(err.contains("did not come up"), "{err}");
    assert!(err.contains(why), "the error says why: {err}");
    assert!(
        err.contains("vmm = \"qemu\""),
        "the error says what to do: {err}"
    );

    assert_eq!(
        procs::mentioning(&run_dir.display().to_string()),
        Vec::<u32>::new(),
        "a firecracker is left"
    );
    assert_eq!(
        files_under(&run_dir),
        Vec::<PathBuf>::new(),
        "run dir not clean"
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
}

/// The VMM pid of a running VM, from its handles.
fn vmm_pid(home: &TestHome, vm: &str) -> i64 {
    let dir = home.json(&["vm", "show", vm, "--json"])["dir"]
        .as_str()
        .unwrap()
        .to_string();
    let h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&dir).join("handles.json")).unwrap())
            .unwrap();
    assert_eq!(h["driver"], "firecracker");
    h["pid"].as_i64().unwrap()
}

/// Boot, exec, stop, start, restart, re-adopt after `kill -9` of the daemon,
/// kill: the whole life of a Firecracker VM. Needs KVM that boots standard
/// kernels, and Debian's kernel imported with its modules (banger derives
/// the vmlinux Firecracker loads).
#[test]
fn firecracker_vm_lifecycle() {
    let Some(bin) = firecracker_bin() else { return };
    if !kvm_boots_standard_kernels() {
        return;
    }
    let (Some(deb), Some(_)) = (kernel_deb(), agent_bin()) else {
        return;
    };
    let home = firecracker_home(&bin);
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
