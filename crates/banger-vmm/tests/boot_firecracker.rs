//! End to end under Firecracker, below the daemon: Debian's kernel as an
//! ELF vmlinux, the banger initramfs with its modules, a busybox base
//! image; boot, exec through hybrid vsock, stop through the agent, and a
//! second boot killed outright.
//!
//! Needs the real Firecracker (`BANGER_FIRECRACKER_BIN`, failing when unset
//! unless named in `BANGER_ALLOW_SKIP`) and KVM that boots standard kernels; on a
//! host without that (no /dev/kvm, or PVM-only as on banger's CI machines)
//! it reports itself skipped with the reason. `scripts/test-firecracker.sh`
//! runs it with the CLI-level Firecracker tests.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_proto::ExecRequest;
use banger_testkit::firecracker::{debian_kernel, firecracker_bin, kvm_boots_standard_kernels};
use banger_testkit::{agent_bin, busybox_rootfs};
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::{DiskRole, DiskSpec, Driver, LaunchSpec, StopHow};

fn mkfs(tree: &Path, image: &Path) {
    std::fs::File::create(image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(tree)
        .arg(image)
        .status()
        .expect("run mkfs.ext4")
        .success();
    assert!(ok, "mkfs.ext4 -d {}", tree.display());
}

async fn uname(c: &banger_proto::client::AgentClient) -> String {
    let o = c
        .exec(ExecRequest {
            argv: vec!["uname".into(), "-r".into()],
            env: vec![],
            cwd: None,
            user: None,
            tty: None,
            stdin: false,
        })
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test]
async fn firecracker_boots_execs_and_stops() {
    let Some(bin) = firecracker_bin() else { return };
    if !kvm_boots_standard_kernels() {
        return;
    }
    let Some(agent) = agent_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(kernel) = debian_kernel(dir.path()) else {
        return;
    };
    let p = dir.path();
    let initramfs = p.join("initramfs.cpio");
    banger_initramfs::build(
        &agent,
        Some(&kernel.modules),
        banger_initramfs::DEFAULT_MODULES,
        &initramfs,
    )
    .expect("build the initramfs");
    let root = p.join("rootfs");
    busybox_rootfs(&root);
    mkfs(&root, &p.join("base.ext4"));
    let ov = p.join("overlay-tree");
    std::fs::create_dir_all(ov.join("upper")).unwrap();
    std::fs::create_dir_all(ov.join("work")).unwrap();
    mkfs(&ov, &p.join("overlay.ext4"));
    let wk = p.join("work-tree");
    std::fs::create_dir_all(&wk).unwrap();
    mkfs(&wk, &p.join("work.ext4"));
    let disk = |role, name: &str, read_only| DiskSpec {
        role,
        path: p.join(name),
        read_only,
    };
    let spec = LaunchSpec {
        name: "fc-e2e".into(),
        kernel: kernel.vmlinux.clone(),
        initramfs: Some(initramfs),
        params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
        vcpus: 1,
        memory_mib: 256,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        inject_socket: None,
        disks: vec![
            disk(DiskRole::Base, "base.ext4", true),
            disk(DiskRole::Overlay, "overlay.ext4", false),
            disk(DiskRole::Work, "work.ext4", false),
        ],
        tap: None,
        tap_fd: None,
        mac: None,
        console_log: p.join("console.log"),
        console_max: 0,
        cgroup: None,
        agent_socket: p.join("agent.sock"),
        api_socket: p.join("api.sock"),
        vsock_cid: Some(3),
        incoming: None,
        detached_nic: false,
        run_dir: p.join("run"),
    };
    let d = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: None,
    };
    let console = || std::fs::read_to_string(p.join("console.log")).unwrap_or_default();

    let t = Instant::now();
    let h = d.spawn(&spec).await.expect("spawn firecracker");
    let c = match d.connect_agent(&h, Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            let _ = d.kill(&h);
            panic!("agent not ready: {e}\n--- console ---\n{}", console());
        }
    };
    eprintln!("firecracker boot-to-agent: {:?}", t.elapsed());
    assert!(uname(&c).await.ends_with("-cloud-amd64"));
    drop(c);
    assert!(
        d.stop(&h, StopHow::Agent, Duration::from_secs(10))
            .await
            .unwrap(),
        "a clean stop through the agent"
    );
    assert!(!d.is_alive(&h));

    // A second boot of the same disks, killed outright.
    let h = d.spawn(&spec).await.expect("spawn firecracker again");
    let c = d.connect_agent(&h, Duration::from_secs(30)).await.unwrap();
    assert!(!uname(&c).await.is_empty());
    d.kill(&h).unwrap();
    assert!(banger_vmm::wait_exit(&h, Duration::from_secs(5)).await);
}
