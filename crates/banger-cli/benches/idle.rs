//! Benchmark: what mapped template memory and suspend-on-idle cost and
//! save, under QEMU (TCG here), in one run.
//!
//! - Restore against guest memory: a warm start (the boot template of the
//!   shape restored, to agent ready) of a 256 MiB, 1 GiB and 2 GiB guest,
//!   p50 of `RUNS`; the goal is 2 GiB within 1.2x of 256 MiB.
//! - Wake on connect: a busybox httpd in a suspended VM, inside a network
//!   namespace; `curl` to its address, to a published port, and `vm exec
//!   -- true`, each from suspended, `WAKES` times; p50 and p95 of the
//!   whole request, with the suspend's own time beside.
//!
//! Run (root, for the namespace; needs the kernel package and the agent):
//! ```text
//! BANGER_TEST_KERNEL_DEB=$(scripts/fetch-kernel.sh .cache) \
//! BANGER_AGENT_BIN=$(scripts/build-agent.sh) \
//! cargo build --release --workspace --bins && cargo bench -p banger-cli --bench idle
//! ```

use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with};

const RUNS: usize = 7;
const WAKES: usize = 20;

/// The `p`-th percentile (0..=1) by nearest rank.
fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let last = v.len() - 1;
    let i = (0..=last)
        .min_by(|a, b| {
            let d = |i: &usize| (*i as f64 - last as f64 * p).abs();
            d(a).total_cmp(&d(b))
        })
        .unwrap_or(last);
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn until_suspended(home: &TestHome, vm: &str) {
    let t = Instant::now();
    while home.json(&["vm", "show", vm, "--json"])["suspended"] != true {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{vm} never suspended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Warm start to agent ready against guest memory.
fn restore_by_memory() {
    let home = boot_home_with(TestHome::with_config("[vm]\nwarm_templates = true\n"))
        .expect("BANGER_TEST_KERNEL_DEB and BANGER_AGENT_BIN");
    println!("warm start to agent ready against guest memory, p50 of {RUNS}, 1 vCPU");
    let mut p50s = Vec::new();
    for mem in ["256M", "1G", "2G"] {
        let t = home.json(&["warm", "--cpus", "1", "--memory", mem, "--json"]);
        let (mut wall, mut ready) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            let name = format!("m{i}");
            home.ok(&[
                "vm", "create", "busybox", "--name", &name, "--cpus", "1", "--memory", mem,
            ]);
            let t0 = Instant::now();
            let r = home.json(&["vm", "start", &name, "--json"]);
            wall.push(ms(t0.elapsed()));
            assert_eq!(r["warm"], true, "{r}");
            let timing = |k: &str| r["timings"][k].as_f64().unwrap();
            ready.push(timing("spawn_ms") + timing("boot_ms"));
            home.ok(&["vm", "rm", "--force", &name]);
        }
        let (w, r) = (pct(wall, 0.5), pct(ready, 0.5));
        println!(
            "  {mem:>5}: vm start {w:7.1} ms, restore to agent ready {r:7.1} ms \
             (template on disk {} KiB)",
            t["state_bytes"].as_u64().unwrap_or(0) >> 10
        );
        p50s.push(r);
    }
    println!(
        "  2G / 256M          {:.2}x (goal <= 1.2x)",
        p50s[2] / p50s[0]
    );
}

/// Wake on connect, from suspended, through each way in.
fn wake_latency() {
    let host = NetNs::new("idlebench");
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.29.0.1/24\"\n\
                  dns_upstreams = [\"127.0.0.1:9\"]\n[vm]\nwarm_templates = true\n";
    let home = boot_home_with(TestHome::with_config(config).in_netns(host.name()))
        .expect("BANGER_TEST_KERNEL_DEB and BANGER_AGENT_BIN");
    home.ok(&["warm", "--cpus", "1", "--memory", "256M"]);
    home.ok(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "web",
        "--cpus",
        "1",
        "--memory",
        "256M",
        "-p",
        "8080:8000",
    ]);
    home.ok(&["vm", "start", "web"]);
    home.ok(&[
        "vm",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo hi > /tmp/www/i && busybox httpd -p 8000 -h /tmp/www",
    ]);
    let ip = home.json(&["vm", "show", "web", "--json"])["guest_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let curl = |url: &str| {
        let out = host
            .command("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "30",
                "-w",
                "%{time_total}",
                url,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .unwrap()
            * 1e3
    };
    // Awake, for the baseline of each way in.
    let awake_ip = pct(
        (0..5)
            .map(|_| curl(&format!("http://{ip}:8000/i")))
            .collect(),
        0.5,
    );
    let awake_port = pct(
        (0..5).map(|_| curl("http://127.0.0.1:8080/i")).collect(),
        0.5,
    );
    let awake_exec = pct(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                home.ok(&["vm", "exec", "web", "--", "true"]);
                ms(t.elapsed())
            })
            .collect(),
        0.5,
    );
    let (mut suspend, mut by_ip, mut by_port, mut by_exec) = (vec![], vec![], vec![], vec![]);
    for i in 0..WAKES * 3 {
        let t = Instant::now();
        home.ok(&["vm", "suspend", "web"]);
        suspend.push(ms(t.elapsed()));
        until_suspended(&home, "web");
        match i % 3 {
            0 => by_ip.push(curl(&format!("http://{ip}:8000/i"))),
            1 => by_port.push(curl("http://127.0.0.1:8080/i")),
            _ => {
                let t = Instant::now();
                home.ok(&["vm", "exec", "web", "--", "true"]);
                by_exec.push(ms(t.elapsed()));
            }
        }
    }
    println!("wake on use, busybox 256 MiB (warm), {WAKES} wakes each, from suspended");
    println!(
        "  vm suspend           p50 {:7.1} ms  p95 {:7.1} ms",
        pct(suspend.clone(), 0.5),
        pct(suspend, 0.95)
    );
    for (what, v, awake) in [
        ("curl to its address ", by_ip, awake_ip),
        ("curl to a published port", by_port, awake_port),
        ("vm exec -- true     ", by_exec, awake_exec),
    ] {
        let (p50, p95) = (pct(v.clone(), 0.5), pct(v, 0.95));
        println!(
            "  {what}  p50 {p50:7.1} ms  p95 {p95:7.1} ms  (awake {awake:.1} ms; added by the wake {:.1} ms at p50)",
            p50 - awake
        );
    }
    home.ok(&["vm", "rm", "--force", "web"]);
}

fn main() {
    let which = std::env::var("BANGER_BENCH_IDLE").unwrap_or_else(|_| "restore,wake".into());
    if which.contains("restore") {
        restore_by_memory();
    }
    if which.contains("wake") {
        wake_latency();
    }
}
