//! End to end under Firecracker: boots the banger initramfs and runs a
//! command through hybrid vsock. Needs a `firecracker` binary (or
//! `BANGER_FIRECRACKER_BIN`) and KVM that boots standard kernels; on
//! machines without them it reports why it is skipped, unless
//! `BANGER_REQUIRE_FIRECRACKER=1` turns that into a failure.

use std::path::PathBuf;
use std::time::Duration;

use banger_proto::ExecRequest;
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::{Accel, DiskRole, DiskSpec, Driver, LaunchSpec, StopHow, detect_accel};

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BANGER_FIRECRACKER_BIN") {
        return Some(p.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("firecracker"))
        .find(|p| p.exists())
}

#[tokio::test]
async fn firecracker_boots_and_execs() {
    let bin = find_binary();
    let accel = detect_accel();
    let (Some(bin), Accel::Kvm, Some(kdir), Some(agent_initramfs)) = (
        bin.clone(),
        accel,
        std::env::var_os("BANGER_TEST_KERNEL_DIR").map(PathBuf::from),
        std::env::var_os("BANGER_TEST_INITRAMFS").map(PathBuf::from),
    ) else {
        let why = format!(
            "skipped: no firecracker binary / KVM cannot boot standard kernels \
             (binary: {bin:?}, accel: {accel:?}; also needs BANGER_TEST_KERNEL_DIR with an \
             uncompressed vmlinux and BANGER_TEST_INITRAMFS)"
        );
        assert!(
            std::env::var("BANGER_REQUIRE_FIRECRACKER").as_deref() != Ok("1"),
            "{why}"
        );
        banger_testkit::report_skip(why.trim_start_matches("skipped: "));
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = std::env::var_os("BANGER_TEST_BASE_IMAGE")
        .map(PathBuf::from)
        .expect("BANGER_TEST_BASE_IMAGE: a base ext4 for the Firecracker test");
    let spec = LaunchSpec {
        name: "fc-e2e".into(),
        kernel: kdir.join("vmlinux"),
        initramfs: Some(agent_initramfs),
        extra_cmdline: "banger.init=none".into(),
        vcpus: 1,
        memory_mib: 256,
        disks: vec![DiskSpec {
            role: DiskRole::Base,
            path: base,
            read_only: true,
        }],
        tap: None,
        mac: None,
        console_log: dir.path().join("console.log"),
        agent_socket: dir.path().join("agent.sock"),
        api_socket: dir.path().join("api.sock"),
        vsock_cid: Some(3),
        run_dir: dir.path().join("run"),
    };
    let d = FirecrackerDriver {
        binary: bin.display().to_string(),
    };
    let h = d.spawn(&spec).await.unwrap();
    let c = d.connect_agent(&h, Duration::from_secs(30)).await.unwrap();
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
    drop(c);
    assert!(
        d.stop(&h, StopHow::Agent, Duration::from_secs(10))
            .await
            .unwrap()
    );
}
