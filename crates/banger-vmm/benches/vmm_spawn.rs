//! Benchmark: the host side of a boot, Firecracker against QEMU.
//!
//! Run (needs the real Firecracker and Debian's kernel package):
//! ```sh
//! export BANGER_FIRECRACKER_BIN=$(scripts/build-firecracker.sh)
//! export BANGER_TEST_KERNEL_DEB=$(scripts/fetch-kernel.sh "$PWD/.cache")
//! cargo bench -p banger-vmm --bench vmm_spawn
//! ```
//!
//! 20 rounds, alternating so host drift lands on every figure:
//! - Firecracker started until its API socket accepts (the process alone);
//! - [`FirecrackerDriver::prepare`]: the same, plus the whole configuration
//!   banger sends (logger, metrics, machine-config, boot-source with the
//!   initramfs, three drives, vsock), stopping before `InstanceStart`:
//!   what a start costs on the host before the guest runs;
//! - QEMU's spawn as banger does it ([`QemuDriver::spawn`]: a sandboxed
//!   child, ready once the machine is built, kernel and initramfs loaded,
//!   and its QMP socket accepts; `benches/confine.rs` splits out what the
//!   sandbox, the jailer and cgroups cost).
//!
//! No NIC: banger attaches none yet, and a tap would touch the host's
//! network. Each VMM is killed after its measurement.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::firecracker::{debian_kernel, firecracker_bin};
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::qemu::QemuDriver;
use banger_vmm::{DiskRole, DiskSpec, Driver, LaunchSpec, detect_accel};

const RUNS: usize = 20;

/// Nearest-rank percentile (`p` in whole percent).
fn pct(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * p / 100]
}

fn report(label: &str, v: &[Duration]) {
    println!(
        "{label:<58} p50 {:>7.2} ms   p95 {:>7.2} ms   (n={})",
        pct(v.to_vec(), 50).as_secs_f64() * 1e3,
        pct(v.to_vec(), 95).as_secs_f64() * 1e3,
        v.len()
    );
}

fn spec(dir: &Path, kernel: &Path, initramfs: &Path, round: usize) -> LaunchSpec {
    let run = dir.join(format!("run-{round}"));
    std::fs::create_dir_all(&run).unwrap();
    let disk = |role, name: &str, read_only| DiskSpec {
        role,
        path: dir.join(name),
        read_only,
    };
    LaunchSpec {
        name: format!("bench-{round}"),
        kernel: kernel.into(),
        initramfs: Some(initramfs.into()),
        params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
        vcpus: 2,
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
        console_log: run.join("console.log"),
        console_max: 0,
        cgroup: None,
        agent_socket: run.join("agent.sock"),
        api_socket: run.join("api.sock"),
        vsock_cid: Some(3),
        incoming: None,
        detached_nic: false,
        run_dir: run,
    }
}

/// Firecracker started until its socket accepts, then killed.
fn socket_ready(bin: &Path, dir: &Path, round: usize) -> Duration {
    let sock = dir.join(format!("raw-{round}.sock"));
    let t = Instant::now();
    let mut child = Command::new(bin)
        .arg("--api-sock")
        .arg(&sock)
        .args(["--level", "Error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start firecracker");
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "no socket");
        std::thread::sleep(Duration::from_micros(200));
    }
    let d = t.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    d
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bin = firecracker_bin().expect("BANGER_FIRECRACKER_BIN");
    let dir = tempfile::tempdir().unwrap();
    let kernel = debian_kernel(dir.path()).expect("BANGER_TEST_KERNEL_DEB");
    let initramfs = dir.path().join("initramfs.cpio");
    std::fs::write(&initramfs, vec![0u8; 4 << 20]).unwrap();
    for d in ["base.ext4", "overlay.ext4", "work.ext4"] {
        std::fs::File::create(dir.path().join(d))
            .unwrap()
            .set_len(8 << 30)
            .unwrap();
    }
    let fc = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: None,
    };
    let qemu = QemuDriver {
        binary: "qemu-system-x86_64".into(),
        accel: detect_accel(),
        sandbox: true,
    };

    let (mut raw, mut prepared, mut qemu_spawn) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..RUNS + 2 {
        let warm = round < 2;
        let r = socket_ready(&bin, dir.path(), round);

        let s = spec(dir.path(), &kernel.vmlinux, &initramfs, round);
        let t = Instant::now();
        let h = fc.prepare(&s).await.expect("firecracker prepare");
        let p = t.elapsed();
        fc.kill(&h).unwrap();
        banger_vmm::wait_exit(&h, Duration::from_secs(5)).await;

        let mut s = spec(dir.path(), &kernel.vmlinuz, &initramfs, round + 1000);
        s.api_socket = s.run_dir.join("qmp.sock");
        s.vsock_cid = None;
        let t = Instant::now();
        let h = qemu.spawn(&s).await.expect("qemu spawn");
        let q = t.elapsed();
        qemu.kill(&h).unwrap();
        banger_vmm::wait_exit(&h, Duration::from_secs(5)).await;

        if !warm {
            raw.push(r);
            prepared.push(p);
            qemu_spawn.push(q);
        }
    }
    println!(
        "host side of a boot, before the guest runs; {RUNS} rounds (after 2 warm-up), 2 vCPUs, \
         256 MiB, 3 drives, vsock, Debian's 6.1 cloud kernel, QEMU accel {}",
        qemu.accel.as_str()
    );
    report("firecracker: started until the API socket accepts", &raw);
    report(
        "firecracker: socket ready + full configuration (prepare)",
        &prepared,
    );
    report(
        "qemu: spawn until QMP accepts (QemuDriver::spawn)",
        &qemu_spawn,
    );
    println!(
        "ratio of p50s, qemu spawn / firecracker prepare: {:.1}x",
        pct(qemu_spawn, 50).as_secs_f64() / pct(prepared, 50).as_secs_f64()
    );
}
