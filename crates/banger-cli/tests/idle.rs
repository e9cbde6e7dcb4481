//! Idle VMs cost nothing, on real QEMU boots inside a network namespace
//! this test makes (the daemon is root there and does host networking
//! itself; no traffic leaves the namespace):
//!
//! - two warm VMs of one template share its pages: each one's PSS is well
//!   under its RSS;
//! - a VM with `--idle-suspend` that nobody uses is suspended (`vm ls`
//!   says so, its QEMU is gone), and wakes on a request to its address,
//!   on a published port (the first request answered), on a DNS query for
//!   its name, on a ping and on `vm exec`; a process counting in its RAM
//!   goes on from where it was;
//! - the guest's wall clock agrees with the host's after a wake, after a
//!   restore and after a 60 s `vm pause`.
//!
//! The memory and disk a guest frees go back to the host in `memory.rs`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with, procs};

/// How long an idle VM waits before it is suspended: the shortest allowed.
const IDLE: &str = "5s";

fn exec(home: &TestHome, vm: &str, script: &str) -> String {
    home.ok(&["vm", "exec", vm, "--", "sh", "-c", script])
}

fn show(home: &TestHome, vm: &str) -> serde_json::Value {
    home.json(&["vm", "show", vm, "--json"])
}

/// QEMUs whose arguments name `needle`.
fn qemus_naming(needle: &str) -> usize {
    procs::qemus_mentioning(needle).len()
}

/// Waits until `vm` is suspended (it is not used meanwhile), and checks
/// that its VMM is gone.
fn until_suspended(home: &TestHome, vm: &str) -> Duration {
    let t = Instant::now();
    loop {
        let v = show(home, vm);
        if v["suspended"] == true {
            let dir = v["dir"].as_str().unwrap();
            assert_eq!(
                qemus_naming(&format!("{dir}/")),
                0,
                "{vm}'s QEMU outlived its suspend"
            );
            let ls = home.ok(&["vm", "ls"]);
            assert!(
                ls.lines()
                    .any(|l| l.starts_with(vm) && l.contains("suspended")),
                "{ls}"
            );
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{vm} never suspended: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn in_ns(ns: &NetNs, program: &str, args: &[&str]) -> (bool, String) {
    let out = ns.command(program).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn now_ns() -> i128 {
    i128::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// The guest's wall clock against the host's: (offset, round trip), in ms.
/// The guest reads its clock somewhere inside the exec's round trip, so
/// the offset from the middle of it is known to half the round trip.
fn clock(home: &TestHome, vm: &str) -> (i128, i128) {
    let t0 = now_ns();
    let out = exec(home, vm, "busybox adjtimex");
    let t1 = now_ns();
    let field = |name: &str| -> i128 {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {out}"))
    };
    let guest = field("time.tv_sec:") * 1_000_000_000 + field("time.tv_usec:") * 1000;
    ((guest - (t0 + t1) / 2) / 1_000_000, (t1 - t0) / 1_000_000)
}

/// The clock is right within 50 ms, beyond what the exec's own round trip
/// leaves unknown; measured twice when the first round trip was long (the
/// first exec after a wake or restore reconnects).
fn assert_clock(home: &TestHome, vm: &str, after: &str) {
    let (mut off, mut rtt) = clock(home, vm);
    if rtt > 200 {
        (off, rtt) = clock(home, vm);
    }
    eprintln!("clock of {vm} after {after}: {off} ms off the host's (round trip {rtt} ms)");
    assert!(
        off.abs() <= 50 + rtt / 2,
        "{vm} after {after}: guest clock {off} ms off the host's (round trip {rtt} ms)"
    );
}

fn counter(home: &TestHome, vm: &str) -> u64 {
    let out = exec(home, vm, "cat /root/count");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("count {out:?}"))
}

/// One DNS query for `name` (type A) to `server`, answered.
fn dns_query(ns: &NetNs, server: &str, name: &str) {
    let script = format!(
        "import socket\n\
         q = b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00'\n\
         for label in '{name}'.split('.'):\n    q += bytes([len(label)]) + label.encode()\n\
         q += b'\\x00\\x00\\x01\\x00\\x01'\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(10)\n\
         s.sendto(q, ('{server}', 53))\n\
         r = s.recv(512)\n\
         assert r[:2] == b'\\x12\\x34' and r[3] & 15 == 0, r\n"
    );
    let (ok, out) = in_ns(ns, "python3", &["-c", &script]);
    assert!(ok, "DNS query for {name}: {out}");
}

#[test]
fn idle_vms_share_their_template_suspend_and_wake_on_first_use() {
    banger_testkit::require_tool("curl", "curl");
    banger_testkit::require_tool("python3", "python3");
    let host = NetNs::new("idle");
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.30.0.1/24\"\n\
                  dns_upstreams = [\"127.0.0.1:9\"]\n[vm]\nwarm_templates = true\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    let t_all = Instant::now();
    let err = home.fails(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "x",
        "--idle-suspend",
        "soon",
    ]);
    assert!(err.contains("idle period"), "{err}");
    let err = home.fails(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "x",
        "--idle-suspend",
        "1s",
    ]);
    assert!(err.contains("out of range"), "{err}");
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));

    home.ok(&["warm", "--cpus", "1", "--memory", "256M"]);
    let small = ["--cpus", "1", "--memory", "256M"];
    let mut web = vec![
        "vm",
        "create",
        "busybox",
        "--name",
        "web",
        "-p",
        "8080:8000",
    ];
    web.extend(small);
    web.extend(["--idle-suspend", IDLE]);
    home.ok(&web);
    let mut peer = vec!["vm", "create", "busybox", "--name", "peer"];
    peer.extend(small);
    home.ok(&peer);
    for vm in ["web", "peer"] {
        let r = home.json(&["vm", "start", vm, "--json"]);
        assert_eq!(r["warm"], true, "{r}");
    }
    assert!(home.ok(&["vm", "show", "web"]).contains("after 5s"));

    // Two VMs of one template share its pages.
    for vm in ["web", "peer"] {
        let pid = home.vmm_pid(vm);
        let r = procs::rollup_kib(u32::try_from(pid).unwrap()).expect("the VMM's smaps_rollup");
        let (rss, pss, shared) = (r.rss, r.pss, r.pss_shmem);
        eprintln!("{vm}: RSS {rss} KiB, PSS {pss} KiB (template share {shared} KiB)");
        assert!(
            pss * 10 < rss * 9,
            "{vm}: PSS {pss} KiB is not well under RSS {rss} KiB"
        );
        assert!(shared > 0, "{vm} maps no shared template memory");
    }

    // The 60 s pause runs while the rest of the test goes on.
    home.ok(&["vm", "pause", "peer"]);
    let paused_at = Instant::now();

    let ip = show(&home, "web")["guest_ip"].as_str().unwrap().to_string();
    exec(
        &home,
        "web",
        "mkdir -p /tmp/www && echo hello-idle > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www; \
         busybox setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done' \
         </dev/null >/dev/null 2>&1 &",
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = counter(&home, "web");

    // Idle: suspended, its VMM gone. A request to its address wakes it and
    // is answered.
    eprintln!("suspended after {:?} idle", until_suspended(&home, "web"));
    let t = Instant::now();
    let (ok, out) = in_ns(
        &host,
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            &format!("http://{ip}:8000/index.html"),
        ],
    );
    assert!(
        ok && out.contains("hello-idle"),
        "the first request after the suspend: {out}"
    );
    eprintln!("woken by a request to its address in {:?}", t.elapsed());
    assert_eq!(show(&home, "web")["suspended"], false);

    // Through the published port on the host's loopback.
    until_suspended(&home, "web");
    let t = Instant::now();
    let (ok, out) = in_ns(
        &host,
        "curl",
        &[
            "-sS",
            "--max-time",
            "30",
            "http://127.0.0.1:8080/index.html",
        ],
    );
    assert!(
        ok && out.contains("hello-idle"),
        "the first request to the published port: {out}"
    );
    eprintln!("woken through the published port in {:?}", t.elapsed());

    // By a command: the counter went on from its RAM, and the clock was
    // stepped.
    until_suspended(&home, "web");
    let t = Instant::now();
    let after = counter(&home, "web");
    eprintln!("woken by vm exec in {:?}", t.elapsed());
    assert!(
        after >= before,
        "the counter restarted: {before} then {after}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        counter(&home, "web") > after,
        "the counter stopped after the wake"
    );
    assert_clock(&home, "web", "a wake");

    // By a DNS query for its name, alone.
    until_suspended(&home, "web");
    dns_query(&host, "172.30.0.1", "web.vm");
    let t = Instant::now();
    while show(&home, "web")["suspended"] == true {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "a DNS query did not wake web"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // By a ping.
    until_suspended(&home, "web");
    let (ok, out) = in_ns(&host, "ping", &["-c", "3", "-W", "10", &ip]);
    assert!(ok, "ping of a suspended vm: {out}");

    // After a restore.
    home.ok(&["vm", "snapshot", "web", "--name", "s1"]);
    home.ok(&["vm", "restore", "s1", "--name", "web2"]);
    assert_clock(&home, "web2", "a restore");
    home.ok(&["vm", "rm", "--force", "web2"]);
    home.ok(&["snapshot", "rm", "s1"]);

    // After a 60 s pause.
    let left = Duration::from_secs(60).saturating_sub(paused_at.elapsed());
    std::thread::sleep(left);
    home.ok(&["vm", "resume", "peer"]);
    assert_clock(&home, "peer", "a 60 s pause");

    // A suspended VM is stopped cleanly (woken to shut down), and removed.
    until_suspended(&home, "web");
    home.ok(&["vm", "stop", "web"]);
    assert_eq!(show(&home, "web")["desired_state"], "stopped");
    home.ok(&["vm", "rm", "--force", "peer", "web"]);
    eprintln!("idle test took {:?}", t_all.elapsed());
}
