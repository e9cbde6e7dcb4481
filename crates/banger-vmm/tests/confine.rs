//! Each VM's VMM in a cgroup of its own with its limits, on whatever this
//! host offers (`banger_config::cgroups`: v2 where a group is delegated to
//! us, else v1 `memory` and `pids`): a real QEMU, started by the driver
//! inside the group (it writes itself into `cgroup.procs` before exec),
//! with `memory` bounded to the guest's RAM plus QEMU's overhead and
//! `pids` bounded; the group goes once the VMM is gone. No guest needs to
//! boot: the process and its group are what is checked. A host with no
//! cgroup we may write skips this test by name.

use std::time::Duration;

use banger_vmm::cgroup::{Cgroups, Limits, VmGroups};
use banger_vmm::qemu::QemuDriver;
use banger_vmm::{Driver, LaunchSpec, VmmKind};

#[tokio::test]
async fn vmm_starts_inside_its_cgroup_with_its_limits() {
    let groups = Cgroups::detect();
    if let Cgroups::Unavailable(why) = &groups {
        banger_testkit::skip(&format!("no cgroup this process may write: {why}"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // QEMU loads whatever it is given before the guest runs; the guest
    // need not get anywhere.
    let kernel = dir.path().join("vmlinuz");
    banger_testkit::fake_bzimage(&kernel, "6.1.0-confine");
    let run_dir = dir.path().join("run");
    let limits = Limits::for_guest(128, VmmKind::Qemu.memory_overhead_mib(None), 1);
    let id = format!("confine-{}", std::process::id());
    let group = groups.create(&id, limits).unwrap();
    let spec = LaunchSpec {
        name: "confine".into(),
        kernel,
        initramfs: None,
        params: banger_proto::boot_params::BootParams::default(),
        vcpus: 1,
        memory_mib: 128,
        disks: Vec::new(),
        tap: None,
        tap_fd: None,
        mac: None,
        console_log: dir.path().join("console.log"),
        console_max: 0,
        cgroup: Some(group.clone()),
        agent_socket: run_dir.join("agent.sock"),
        api_socket: run_dir.join("qmp.sock"),
        vsock_cid: None,
        incoming: None,
        detached_nic: false,
        inject_socket: None,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        run_dir,
    };
    let d = QemuDriver::default();
    let h = d.spawn(&spec).await.expect("qemu starts");
    assert!(group.holds(h.pid), "QEMU {} is not in {group:?}", h.pid);
    let read = |file: &str| {
        group
            .dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let memory = match &groups {
        Cgroups::V2 { .. } => read("memory.max"),
        _ => read("memory.limit_in_bytes"),
    };
    assert_eq!(memory, limits.memory_bytes.to_string());
    assert_eq!(read("pids.max"), limits.pids.to_string());
    eprintln!(
        "{}: QEMU {} held, {}",
        groups.describe(),
        h.pid,
        group.describe()
    );
    d.kill(&h).unwrap();
    assert!(banger_vmm::wait_exit(&h, Duration::from_secs(5)).await);
    group.remove();
    assert!(
        group.dirs.iter().all(|d| !d.exists()),
        "{group:?} left behind"
    );
}
