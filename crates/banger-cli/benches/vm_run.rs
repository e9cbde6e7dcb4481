//! Benchmark: `banger vm run -- true` under QEMU, broken down, cold and
//! warm (restored from a boot template), against the floor measured in
//! the same run.
//!
//! Run (needs the kernel package and the static agent, as the tests do):
//! ```text
//! BANGER_TEST_KERNEL_DEB=$(scripts/fetch-kernel.sh .cache) \
//! BANGER_AGENT_BIN=$(scripts/build-agent.sh) \
//! cargo build --release --workspace && cargo bench -p banger-cli --bench vm_run
//! ```
//!
//! Stages, p50 over 15 runs: host prep (create: allocation + disks; start's
//! prepare: initramfs lookup, launch spec), VMM spawn, boot to agent ready,
//! exec round trip (`banger vm exec -- true`, CLI process included). Total:
//! `banger vm run busybox --cold -- true` end to end; warm: the same
//! without `--cold`, after `banger warm` made the template. Floor: plain
//! `qemu-system-x86_64` with the same machine, kernel and command line
//! booting an initramfs whose /init powers off at once, timed to QEMU's exit.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use banger_testkit::require_tool;

const RUNS: usize = 15;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

fn api(socket: &str, method: &str, path: &str, body: &str) -> serde_json::Value {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{method} {path}: {out}");
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).expect("json body")
}

/// An initramfs whose /init is busybox powering the machine off.
fn floor_initramfs(out: &Path) {
    let busybox = std::fs::read(require_tool("busybox", "busybox-static")).expect("busybox");
    let mut w = banger_initramfs::cpio::Writer::new(Vec::new());
    w.dir("bin", 0o755).unwrap();
    w.dir("dev", 0o755).unwrap();
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file("bin/busybox", 0o755, &busybox).unwrap();
    w.file(
        "init",
        0o755,
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    std::fs::write(out, w.finish().unwrap()).unwrap();
}

fn main() {
    let home = banger_testkit::boot_home().expect("BANGER_TEST_KERNEL_DEB and BANGER_AGENT_BIN");
    let socket = home.json(&["daemon", "status", "--json"])["socket"]
        .as_str()
        .unwrap()
        .to_string();
    let kernel = home.json(&["kernel", "ls", "--json"])[0].clone();

    // Warm-up: builds the initramfs, fills the page cache.
    home.ok(&[
        "vm", "run", "busybox", "--rm", "--memory", "256M", "--", "true",
    ]);

    let (mut create, mut prepare, mut spawn, mut boot, mut exec) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut cmdline = String::new();
    for i in 0..RUNS {
        let name = format!("stage-{i}");
        let t = Instant::now();
        api(
            &socket,
            "POST",
            "/v1/vms",
            &format!(r#"{{"name":"{name}","memory_mib":256}}"#),
        );
        create.push(t.elapsed().as_secs_f64() * 1e3);
        let report = api(
            &socket,
            "POST",
            &format!("/v1/vms/{name}/start"),
            r#"{"cold":true}"#,
        );
        prepare.push(report["timings"]["prepare_ms"].as_f64().unwrap());
        spawn.push(report["timings"]["spawn_ms"].as_f64().unwrap());
        boot.push(report["timings"]["boot_ms"].as_f64().unwrap());
        let t = Instant::now();
        home.ok(&["vm", "exec", &name, "--", "true"]);
        exec.push(t.elapsed().as_secs_f64() * 1e3);
        if cmdline.is_empty() {
            let dir = report["vm"]["dir"].as_str().unwrap();
            let h: serde_json::Value = serde_json::from_slice(
                &std::fs::read(Path::new(dir).join("handles.json")).unwrap(),
            )
            .unwrap();
            let pid = h["pid"].as_i64().unwrap();
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let at = args.iter().position(|a| a == "-append").unwrap();
            cmdline = args[at + 1].clone();
        }
        home.ok(&["vm", "rm", "--force", &name]);
    }

    // The floor: same QEMU machine, kernel and parameters, trivial init.
    let initrd = home.path().join("floor.cpio");
    floor_initramfs(&initrd);
    let kernel_path = kernel["kernel_path"].as_str().unwrap().to_string();
    // Our disks and agent parameters do not apply; keep the kernel's own.
    let floor_cmdline: String = cmdline
        .split_whitespace()
        .filter(|p| !p.starts_with("banger."))
        .collect::<Vec<_>>()
        .join(" ");
    // TCG as banger runs it: one thread for both vCPUs.
    let accel = format!("tcg,thread={}", banger_vmm::qemu::TCG_THREAD);
    let floor_once = || {
        let t = Instant::now();
        let st = Command::new("qemu-system-x86_64")
            .args([
                "-M", "microvm", "-accel", &accel, "-cpu", "max", "-m", "256",
            ])
            .args(["-smp", "2"])
            .args([
                "-no-reboot",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
            ])
            .args(["-serial", "null", "-kernel", &kernel_path, "-initrd"])
            .arg(&initrd)
            .args(["-append", &floor_cmdline])
            .status()
            .unwrap();
        assert!(st.success());
        t.elapsed().as_secs_f64() * 1e3
    };

    // The boot template warm runs restore (same shape: 2 vCPUs, 256 MiB).
    let template = home.json(&["warm", "--memory", "256M", "--json"]);

    // Floor, cold and warm `vm run` alternate, so drift on a shared host
    // (TCG boots vary by a tenth from one minute to the next) lands on all
    // three equally.
    let (mut total, mut floor, mut warm) = (vec![], vec![], vec![]);
    let timed_run = |name: &str, extra: Option<&str>| {
        let mut args = vec!["vm", "run", "busybox", "--name", name, "--memory", "256M"];
        args.extend(extra);
        args.extend(["--", "true"]);
        let t = Instant::now();
        home.ok(&args);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        home.ok(&["vm", "rm", "--force", name]);
        ms
    };
    for i in 0..RUNS {
        floor.push(floor_once());
        total.push(timed_run(&format!("cold-{i}"), Some("--cold")));
        warm.push(timed_run(&format!("warm-{i}"), None));
    }

    let host_prep = p50(create.clone()) + p50(prepare.clone());
    println!("vm run -- true under QEMU (TCG), busybox image, 256 MiB, p50 of {RUNS} runs");
    println!(
        "  host prep        {host_prep:>8.1} ms  (create {:.1} + start prepare {:.1})",
        p50(create),
        p50(prepare)
    );
    println!("  vmm spawn        {:>8.1} ms", p50(spawn.clone()));
    println!(
        "  host prep+spawn  {:>8.1} ms  (goal < 50 ms)",
        host_prep + p50(spawn)
    );
    println!("  boot to agent    {:>8.1} ms", p50(boot));
    println!(
        "  exec round trip  {:>8.1} ms  (banger vm exec -- true, CLI included)",
        p50(exec)
    );
    let total = p50(total);
    let floor = p50(floor);
    println!("  vm run -- true   {total:>8.1} ms  (whole CLI command)");
    println!(
        "  floor            {floor:>8.1} ms  (plain qemu, same kernel, trivial init, to exit)"
    );
    println!("  ratio            {:>8.2}x (goal <= 1.15x)", total / floor);
    let warm = p50(warm);
    println!(
        "  warm vm run      {warm:>8.1} ms  (restored from template {}, {} MiB on disk: devices and the RAM it maps)",
        template["key"].as_str().unwrap_or("?"),
        template["state_bytes"].as_u64().unwrap_or(0) >> 20
    );
    println!(
        "  warm / floor     {:>8.2}x (goal <= 0.2x); warm / cold {:.2}x",
        warm / floor,
        warm / total
    );
}
