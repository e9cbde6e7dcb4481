//! `vm forward` and `vm stats` end to end under QEMU on one busybox VM
//! (no NIC: everything goes through the agent):
//! - an echo server in the guest behind `vm forward bb 0:7000`, two
//!   clients connected at once on the host's loopback, each getting its
//!   own bytes back; Ctrl-C ends the forward and closes the port;
//! - `vm stats` figures move when the guest burns CPU and fills memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home};

fn exec(home: &TestHome, script: &str) -> String {
    home.ok(&["vm", "exec", "bb", "--", "sh", "-c", script])
}

fn interrupt(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A client that connects, waits for the other, sends `data`, half-closes
/// and reads the echo to the end.
fn client(port: u16, data: Vec<u8>, both: Arc<Barrier>) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // Both connections are open (and each has had its first bytes echoed)
    // before either finishes: they run at once, not one after the other.
    c.write_all(&data[..1000]).unwrap();
    let mut first = vec![0u8; 1000];
    c.read_exact(&mut first).unwrap();
    both.wait();
    let mut back = first;
    let mut rest = c.try_clone().unwrap();
    let tail = data[1000..].to_vec();
    let writer = std::thread::spawn(move || {
        rest.write_all(&tail).unwrap();
        rest.shutdown(Shutdown::Write).unwrap();
    });
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

fn stats(home: &TestHome) -> serde_json::Value {
    let rows = home.json(&["vm", "stats", "bb", "--json", "--interval", "2"]);
    rows[0].clone()
}

#[test]
fn forward_two_clients_at_once_and_stats_that_move() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "bb"]);

    // --- forward ---
    exec(
        &home,
        "busybox ln -sf busybox /bin/nc; nc -ll -p 7000 -e /bin/cat </dev/null >/dev/null 2>&1 &",
    );
    let t = Instant::now();
    while !exec(&home, "netstat -ltn 2>/dev/null || cat /proc/net/tcp").contains(":7000")
        && !exec(&home, "cat /proc/net/tcp").contains(":1B58")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the guest server never listened"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut fwd = home
        .banger_std()
        .args(["vm", "forward", "bb", "0:7000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fwd.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "forwarding 127.0.0.1:PORT -> bb:7000"
    let addr = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        addr.starts_with("127.0.0.1:"),
        "loopback by default: {line}"
    );
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let both = Arc::new(Barrier::new(2));
    let payload = |seed: u8| -> Vec<u8> {
        (0..300_000u32)
            .map(|i| i.wrapping_mul(31).to_le_bytes()[0] ^ seed)
            .collect()
    };
    let (a, b) = (payload(0x55), payload(0xaa));
    let ta = {
        let (a, both) = (a.clone(), both.clone());
        std::thread::spawn(move || client(port, a, both))
    };
    let tb = {
        let (b, both) = (b.clone(), both.clone());
        std::thread::spawn(move || client(port, b, both))
    };
    assert!(ta.join().unwrap() == a, "client A got other bytes back");
    assert!(tb.join().unwrap() == b, "client B got other bytes back");
    interrupt(&fwd);
    let status = fwd.wait().unwrap();
    let mut err = String::new();
    fwd.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "forward after Ctrl-C: {status} {err}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed after Ctrl-C"
    );
    let err = home.fails(&["vm", "forward", "bb", "1:0"]);
    assert!(err.contains("cannot be 0"), "{err}");

    // --- stats ---
    let idle = stats(&home);
    eprintln!("idle: {idle}");
    assert_eq!(idle["state"], "running", "{idle}");
    assert!(idle["memory_total_bytes"].as_u64().unwrap() >> 20 <= 256);
    let disks = idle["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{idle}");
    assert!(
        disks
            .iter()
            .all(|d| d["size_bytes"].as_u64().unwrap() > 1 << 30)
    );
    assert!(idle["vmm_rss_bytes"].as_u64().unwrap() > 10 << 20, "{idle}");
    assert!(idle["uptime_ms"].as_u64().unwrap() > 0, "{idle}");
    assert!(idle["net_rx_bytes"].is_null(), "no NIC: {idle}");

    // 96 MiB in a tmpfs (shared memory is not reclaimable, so it counts as
    // used) and a busy loop.
    exec(
        &home,
        "mkdir -p /mnt/hog && mount -t tmpfs -o size=120m none /mnt/hog && \
         dd if=/dev/zero of=/mnt/hog/f bs=1M count=96 2>/dev/null; \
         (while :; do :; done) </dev/null >/dev/null 2>&1 &",
    );
    let busy = stats(&home);
    eprintln!("busy: {busy}");
    let used = |v: &serde_json::Value| v["memory_used_bytes"].as_u64().unwrap();
    assert!(
        used(&busy) > used(&idle) + (80 << 20),
        "guest memory used: {} -> {}",
        used(&idle),
        used(&busy)
    );
    let pct = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        pct(&busy, "guest_cpu_percent") > 80.0
            && pct(&busy, "guest_cpu_percent") > pct(&idle, "guest_cpu_percent") + 20.0,
        "guest CPU: {} -> {}",
        pct(&idle, "guest_cpu_percent"),
        pct(&busy, "guest_cpu_percent")
    );
    assert!(
        pct(&busy, "vmm_cpu_percent") > 30.0,
        "VMM CPU while the guest spins: {}",
        pct(&busy, "vmm_cpu_percent")
    );
    // The table prints the same VM.
    let table = home.ok(&["vm", "stats", "--interval", "0.5"]);
    assert!(table.lines().any(|l| l.starts_with("bb ")), "{table}");
}
