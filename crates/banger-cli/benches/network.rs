//! Benchmark: what host networking costs, inside a network namespace this
//! benchmark creates (root needed; no traffic leaves it).
//!
//! Run (needs the kernel package and the static agent, as the tests do):
//! ```text
//! . /work/wt/env.sh   # or BANGER_TEST_KERNEL_DEB=... BANGER_AGENT_BIN=...
//! cargo build -p banger-cli -p bangerd && cargo bench --profile dev -p banger-cli --bench network
//! ```
//!
//! 1. Host-side networking in `vm start` (`timings.network_ms`: tap,
//!    DNS record and, with `-p`, the nft table replaced), p50 over 20
//!    starts of a VM with one published port and 20 of one without,
//!    alternating. Goal: < 5 ms.
//! 2. `vm run busybox -- true` with a NIC and with `--network none`,
//!    alternating, p50.
//! 3. Guest -> host TCP throughput over the bridge (busybox httpd in the
//!    guest serving 64 MiB, fetched by curl on the host) beside the same
//!    fetch over host loopback (python3 http.server), same run.

use std::process::Command;
use std::time::Instant;

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with};

const STARTS: usize = 20;
const RUNS: usize = 6;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

/// curl's download speed of `url` in MB/s, fetched in `ns`.
fn fetch_mbps(ns: &NetNs, url: &str) -> f64 {
    let out = ns
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{speed_download}", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}: {:?}", out);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e6
}

fn main() {
    let host = NetNs::new("bench");
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.29.0.1/24\"\n\
                  dns_upstreams = [\"127.0.0.1:9\"]\n";
    let home = boot_home_with(TestHome::with_config(config).in_netns(host.name()))
        .expect("BANGER_TEST_KERNEL_DEB and BANGER_AGENT_BIN");
    let vm = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "vm", "create", "busybox", "--name", name, "--cpus", "1", "--memory", "256M",
        ];
        args.extend_from_slice(extra);
        home.ok(&args);
    };
    vm("pub", &["-p", "18080:8000"]);
    vm("plain", &[]);
    // Warm-up: the initramfs is built once.
    home.ok(&["vm", "start", "plain"]);
    home.ok(&["vm", "kill", "plain"]);

    let (mut with_port, mut without) = (vec![], vec![]);
    for _ in 0..STARTS {
        for (name, out) in [("pub", &mut with_port), ("plain", &mut without)] {
            let r = home.json(&["vm", "start", name, "--json"]);
            out.push(r["timings"]["network_ms"].as_f64().unwrap());
            home.ok(&["vm", "kill", name]);
        }
    }

    let (mut nic, mut none) = (vec![], vec![]);
    for i in 0..RUNS {
        for (net, out) in [("auto", &mut nic), ("none", &mut none)] {
            let name = format!("run-{net}-{i}");
            let t = Instant::now();
            home.ok(&[
                "vm",
                "run",
                "busybox",
                "--name",
                &name,
                "--memory",
                "256M",
                "--network",
                net,
                "--",
                "true",
            ]);
            out.push(t.elapsed().as_secs_f64() * 1e3);
            home.ok(&["vm", "rm", "--force", &name]);
        }
    }

    // Throughput: the same 64 MiB file over the bridge and over loopback.
    home.ok(&["vm", "start", "plain"]);
    let ip = home.json(&["vm", "show", "plain", "--json"])["guest_ip"]
        .as_str()
        .unwrap()
        .to_string();
    home.ok(&[
        "vm", "exec", "plain", "--", "sh", "-c",
        "mkdir -p /tmp/www && busybox dd if=/dev/zero of=/tmp/www/big bs=1048576 count=64 2>/dev/null && busybox httpd -p 8000 -h /tmp/www",
    ]);
    let dir = home.path().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big"), vec![0u8; 64 << 20]).unwrap();
    let mut server = host
        .command("python3")
        .args([
            "-m",
            "http.server",
            "18081",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (mut bridge, mut lo) = (vec![], vec![]);
    for _ in 0..3 {
        bridge.push(fetch_mbps(&host, &format!("http://{ip}:8000/big")));
        lo.push(fetch_mbps(&host, "http://127.0.0.1:18081/big"));
    }
    let _ = server.kill();
    let _ = server.wait();
    home.ok(&["vm", "rm", "--force", "plain"]);
    home.ok(&["vm", "rm", "--force", "pub"]);
    let load = Command::new("uptime").output().unwrap();

    println!("host networking, QEMU (TCG), busybox image, 256 MiB");
    println!(
        "  vm start network_ms, 1 published port  p50 {:>7.2} ms  (tap + DNS record + nft table, {STARTS} starts)",
        p50(with_port)
    );
    println!(
        "  vm start network_ms, no port           p50 {:>7.2} ms  (tap + DNS record, {STARTS} starts)",
        p50(without)
    );
    println!(
        "  vm run -- true with a NIC              p50 {:>7.0} ms  ({RUNS} runs)",
        p50(nic)
    );
    println!(
        "  vm run -- true --network none          p50 {:>7.0} ms  ({RUNS} runs, alternating)",
        p50(none)
    );
    println!(
        "  guest -> host TCP over the bridge      p50 {:>7.1} MB/s (64 MiB, busybox httpd -> curl)",
        p50(bridge)
    );
    println!(
        "  host loopback, same fetch              p50 {:>7.1} MB/s (python3 http.server -> curl)",
        p50(lo)
    );
    println!("  {}", String::from_utf8_lossy(&load.stdout).trim());
}
