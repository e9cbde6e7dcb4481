//! Benchmark: `vm create` with 8 GiB overlay and work disks, host-side time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p banger-cli --bench vm_create`
//!
//! Measures 20 creates through the API (daemon-side work: allocation, two
//! sparse disks built with `mkfs.ext4 -d`, record) and 20 through the `banger`
//! binary (adds CLI start-up and connection), against the floor measured in
//! the same run: two bare `mkfs.ext4 -d` of 8 GiB sparse files, as banger
//! runs them (in parallel). Goal: p50 under 100 ms.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, fake_bzimage, tiny_rootfs};

const RUNS: usize = 20;

/// Nearest-rank percentile (`p` in whole percent) of a few dozen samples.
fn pct(mut v: Vec<Duration>, p: usize) -> Duration {
    v.sort();
    v[(v.len() - 1) * p / 100]
}

fn report(label: &str, v: &[Duration]) {
    println!(
        "{label:<42} p50 {:>7.1} ms   p95 {:>7.1} ms   (n={})",
        pct(v.to_vec(), 50).as_secs_f64() * 1e3,
        pct(v.to_vec(), 95).as_secs_f64() * 1e3,
        v.len()
    );
}

fn api_create(socket: &str, name: &str) -> Duration {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let t = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    write!(
        s,
        "POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let d = t.elapsed();
    assert!(out.starts_with("HTTP/1.1 200"), "create failed: {out}");
    d
}

fn main() {
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    fake_bzimage(&k, "6.1.0-bench");
    home.ok(&["kernel", "import", k.to_str().unwrap()]);
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "bench"]);
    let status = home.json(&["daemon", "status", "--json"]);
    let socket = status["socket"].as_str().unwrap().to_string();

    // Warm the page cache and the daemon.
    for i in 0..3 {
        api_create(&socket, &format!("warm-{i}"));
    }

    let mut api = Vec::new();
    for i in 0..RUNS {
        api.push(api_create(&socket, &format!("api-{i}")));
    }
    let mut cli = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        home.ok(&["vm", "create", "--name", &format!("cli-{i}")]);
        cli.push(t.elapsed());
    }

    // The floor: the two mkfs runs a create cannot avoid, in parallel.
    let stage = home.path().join("floor-stage");
    std::fs::create_dir_all(stage.join("upper/etc")).unwrap();
    std::fs::write(stage.join("upper/etc/hostname"), "x\n").unwrap();
    let mut floor = Vec::new();
    for i in 0..RUNS {
        let a = home.path().join(format!("floor-a-{i}.ext4"));
        let b = home.path().join(format!("floor-b-{i}.ext4"));
        let t = Instant::now();
        let spawn = |p: &std::path::Path| {
            std::fs::File::create(p).unwrap().set_len(8 << 30).unwrap();
            std::process::Command::new("mkfs.ext4")
                // The flags banger-disk uses (see its mkfs.rs).
                .args(["-q", "-F", "-t", "ext4", "-O", "^resize_inode"])
                .args([
                    "-E",
                    "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                    "-d",
                ])
                .arg(&stage)
                .arg(p)
                .spawn()
                .unwrap()
        };
        let (mut ca, mut cb) = (spawn(&a), spawn(&b));
        assert!(ca.wait().unwrap().success() && cb.wait().unwrap().success());
        floor.push(t.elapsed());
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    }

    println!("vm create, 8 GiB overlay + 8 GiB work disk, {RUNS} runs each");
    report("API request (daemon host-side time)", &api);
    report("banger vm create (CLI process end to end)", &cli);
    report("floor: 2x mkfs.ext4 -d 8 GiB in parallel", &floor);
}
