//! Benchmark: what confining a VMM costs on the host side of a start.
//!
//! Run as root (the jailer and cgroups need it), with the real Firecracker,
//! its jailer and filter, and Debian's kernel package:
//! ```sh
//! export BANGER_FIRECRACKER_BIN=$(scripts/build-firecracker.sh)
//! export BANGER_JAILER_BIN=$(dirname $BANGER_FIRECRACKER_BIN)/jailer
//! export BANGER_TEST_KERNEL_DEB=$(scripts/fetch-kernel.sh "$PWD/.cache")
//! cargo bench -p banger-vmm --bench confine
//! ```
//!
//! 20 rounds after 2 warm-up rounds, each measuring, alternately:
//! - QEMU's spawn without its sandbox or a cgroup, then with both (the
//!   cgroup made and entered, as the daemon does, inside the timing);
//! - Firecracker's `prepare` (start, whole configuration, before
//!   `InstanceStart`) unjailed without a cgroup, then jailed (the chroot
//!   made with its links, the jailer's setup) in a cgroup;
//! - writing `handles.json` (what the start waits for), then making it
//!   durable (the fsyncs of the file and its directory, on a thread of
//!   their own in the daemon).
//!
//! No NIC. Each VMM is killed after its measurement; groups and chroots
//! are removed outside the timings.

use std::path::Path;
use std::time::{Duration, Instant};

use banger_testkit::firecracker::{debian_kernel, firecracker_bin, jailer_bin};
use banger_vmm::cgroup::{Cgroups, Limits, VmGroups};
use banger_vmm::firecracker::FirecrackerDriver;
use banger_vmm::firecracker::jail::{Jail, Jailer};
use banger_vmm::qemu::QemuDriver;
use banger_vmm::{DiskRole, DiskSpec, Driver, LaunchSpec, VmmKind, detect_accel};

const RUNS: usize = 20;

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

fn spec(dir: &Path, kernel: &Path, initramfs: &Path, name: &str) -> LaunchSpec {
    let run = dir.join(format!("run-{name}"));
    std::fs::create_dir_all(&run).unwrap();
    let disk = |role, file: &str, read_only| DiskSpec {
        role,
        path: dir.join(file),
        read_only,
    };
    LaunchSpec {
        name: format!("bench-{name}"),
        kernel: kernel.into(),
        initramfs: Some(initramfs.into()),
        params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
        vcpus: 2,
        memory_mib: 256,
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
        inject_socket: None,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        run_dir: run,
    }
}

async fn end<D: Driver>(d: &D, h: &banger_vmm::VmHandles) {
    d.kill(h).unwrap();
    banger_vmm::wait_exit(h, Duration::from_secs(5)).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bin = firecracker_bin().expect("BANGER_FIRECRACKER_BIN");
    let jailer = jailer_bin().expect("BANGER_JAILER_BIN");
    let groups = Cgroups::detect();
    if let Cgroups::Unavailable(why) = &groups {
        panic!("no cgroups here: {why}");
    }
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
    let qemu = |sandbox| QemuDriver {
        binary: "qemu-system-x86_64".into(),
        accel: detect_accel(),
        sandbox,
    };
    let fc_plain = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: None,
    };
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let jail = Jailer {
        binary: jailer.clone(),
        seccomp_filter: Some(jailer.with_file_name("seccomp-filter.bpf")),
        chroot_base: dir.path().join("jail"),
        uid,
        gid,
    };
    let fc_jailed = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: Some(jail.clone()),
    };
    let limits = |kind: VmmKind| Limits::for_guest(256, kind.memory_overhead_mib(None), 2);

    let mut m: [Vec<Duration>; 9] = Default::default();
    for round in 0..RUNS + 2 {
        let warm = round < 2;
        let mut t = [Duration::ZERO; 9];

        let mut s = spec(
            dir.path(),
            &kernel.vmlinuz,
            &initramfs,
            &format!("q{round}"),
        );
        s.api_socket = s.run_dir.join("qmp.sock");
        s.vsock_cid = None;
        let d = qemu(false);
        let t0 = Instant::now();
        let h = d.spawn(&s).await.expect("qemu spawn");
        t[0] = t0.elapsed();
        end(&d, &h).await;

        let mut s = spec(
            dir.path(),
            &kernel.vmlinuz,
            &initramfs,
            &format!("qc{round}"),
        );
        s.api_socket = s.run_dir.join("qmp.sock");
        s.vsock_cid = None;
        let d = qemu(true);
        let t0 = Instant::now();
        s.cgroup = Some(
            groups
                .create(&format!("bq{round}"), limits(VmmKind::Qemu))
                .unwrap(),
        );
        let h = d.spawn(&s).await.expect("qemu confined spawn");
        t[1] = t0.elapsed();
        end(&d, &h).await;
        s.cgroup.as_ref().unwrap().remove();

        // The two parts apart: the sandbox alone, the cgroup alone.
        let mut s = spec(
            dir.path(),
            &kernel.vmlinuz,
            &initramfs,
            &format!("qs{round}"),
        );
        s.api_socket = s.run_dir.join("qmp.sock");
        s.vsock_cid = None;
        let t0 = Instant::now();
        let h = d.spawn(&s).await.expect("qemu sandboxed spawn");
        t[5] = t0.elapsed();
        end(&d, &h).await;
        let mut s = spec(
            dir.path(),
            &kernel.vmlinuz,
            &initramfs,
            &format!("qg{round}"),
        );
        s.api_socket = s.run_dir.join("qmp.sock");
        s.vsock_cid = None;
        let d = qemu(false);
        let t0 = Instant::now();
        s.cgroup = Some(
            groups
                .create(&format!("bg{round}"), limits(VmmKind::Qemu))
                .unwrap(),
        );
        let h = d.spawn(&s).await.expect("qemu spawn in a cgroup");
        t[6] = t0.elapsed();
        end(&d, &h).await;
        s.cgroup.as_ref().unwrap().remove();

        let s = spec(
            dir.path(),
            &kernel.vmlinux,
            &initramfs,
            &format!("f{round}"),
        );
        let t0 = Instant::now();
        let h = fc_plain.prepare(&s).await.expect("firecracker prepare");
        t[2] = t0.elapsed();
        end(&fc_plain, &h).await;

        let mut s = spec(
            dir.path(),
            &kernel.vmlinux,
            &initramfs,
            &format!("fj{round}"),
        );
        let t0 = Instant::now();
        s.cgroup = Some(
            groups
                .create(&format!("bf{round}"), limits(VmmKind::Firecracker))
                .unwrap(),
        );
        let h = fc_jailed
            .prepare(&s)
            .await
            .expect("jailed firecracker prepare");
        t[3] = t0.elapsed();
        end(&fc_jailed, &h).await;
        s.cgroup.as_ref().unwrap().remove();
        Jail::remove(&Jail::of(&jail, &s.run_dir).dir);
        let s = spec(
            dir.path(),
            &kernel.vmlinux,
            &initramfs,
            &format!("fn{round}"),
        );
        let t0 = Instant::now();
        let h = fc_jailed
            .prepare(&s)
            .await
            .expect("jailed firecracker prepare");
        t[7] = t0.elapsed();
        end(&fc_jailed, &h).await;
        Jail::remove(&Jail::of(&jail, &s.run_dir).dir);

        // handles.json as the daemon writes it: whole and renamed (the
        // start waits for that), then made durable on a thread (timed
        // here to say what the start no longer waits for).
        let body = serde_json::to_vec_pretty(&h).unwrap();
        let path = dir.path().join("handles.json");
        let t0 = Instant::now();
        let (f, d) = {
            use std::io::Write;
            let tmp = path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp).unwrap();
            f.write_all(&body).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            (f, std::fs::File::open(dir.path()).unwrap())
        };
        t[4] = t0.elapsed();
        let t0 = Instant::now();
        f.sync_all().unwrap();
        d.sync_all().unwrap();
        t[8] = t0.elapsed();

        if !warm {
            for (v, d) in m.iter_mut().zip(t) {
                v.push(d);
            }
        }
    }
    println!(
        "host side of a start, confined or not; {RUNS} rounds (after 2 warm-up), 2 vCPUs, \
         256 MiB, 3 drives, Debian's 6.1 cloud kernel, QEMU accel {}, {}",
        detect_accel().as_str(),
        groups.describe()
    );
    let [q, qc, f, fj, hf, qs, qg, fjn, hs] = m;
    report("qemu: spawn, no sandbox, no cgroup", &q);
    report("qemu: spawn, -sandbox only", &qs);
    report("qemu: spawn, cgroup only (made, entered)", &qg);
    report("qemu: spawn, -sandbox + cgroup", &qc);
    report("firecracker: prepare, unjailed, no cgroup", &f);
    report("firecracker: prepare, jailed (chroot, filter) only", &fjn);
    report(
        "firecracker: prepare, jailed (chroot, filter) + cgroup",
        &fj,
    );
    report(
        "handles.json written and renamed (on the start's path)",
        &hf,
    );
    report(
        "handles.json fsynced, file and dir (on a thread of its own)",
        &hs,
    );
    let added = |a: &[Duration], b: &[Duration]| {
        (pct(b.to_vec(), 50).as_secs_f64() - pct(a.to_vec(), 50).as_secs_f64()) * 1e3
    };
    println!(
        "added by confinement (p50): qemu {:+.2} ms, firecracker {:+.2} ms",
        added(&q, &qc),
        added(&f, &fj)
    );
}
