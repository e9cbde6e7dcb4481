//! Warm starts on real QEMU boots: a VM restored from a boot template is
//! indistinguishable from a cold-booted one for what a user sees (mounts,
//! disk sizes, hostname, env, user, exit codes, files on /root), two warm
//! VMs of one template draw different random streams, `--cold` boots,
//! templates are made on first use and go away with their kernel, the
//! daemon lets go of a template's RAM once no VM maps it, and bad input is
//! one line.

use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home_with, procs};

/// What a user could look at, one line each. /proc/cmdline is left out on
/// purpose: a warm guest keeps the template's (ARCHITECTURE.md says so).
const CHECKS: &str = "hostname; \
    mount | awk '{print $1, $3, $5}' | sort | tr '\\n' ' '; echo; \
    for d in /sys/block/vd*; do echo \"$(cat $d/serial) $(cat $d/size)\"; done | sort | tr '\\n' ' '; echo; \
    df -k /root | tail -1 | awk '{print $2}'; \
    id -u; echo \"$HOME $PATH\"; \
    ls -a /root | tr '\\n' ' '; echo; \
    test -e /etc/resolv.conf && cat /etc/resolv.conf; \
    date -u +%Y-%m-%d; \
    exit 7";

fn run(home: &TestHome, name: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "vm",
        "run",
        "busybox",
        "--name",
        name,
        "--cpus",
        "1",
        "--memory",
        "256M",
        "--work-disk-size",
        "3G",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", CHECKS]);
    home.outcome(&args)
}

fn uuids(home: &TestHome, vm: &str) -> Vec<String> {
    home.ok(&[
        "vm",
        "exec",
        vm,
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do cat /proc/sys/kernel/random/uuid; done",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

fn templates(home: &TestHome) -> Vec<serde_json::Value> {
    home.json(&["warm", "--list", "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn warm_starts_match_cold_ones() {
    let Some(home) = boot_home_with(TestHome::with_config("[vm]\nwarm_templates = true\n")) else {
        return;
    };
    // Bad input first: one line, nothing made.
    let err = home.fails(&["warm", "nosuchkernel"]);
    assert!(err.contains("nosuchkernel"), "{err}");
    let err = home.fails(&["warm", "--memory", "1K"]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(templates(&home).is_empty());

    let t = home.json(&[
        "warm", "busybox", "--cpus", "1", "--memory", "256M", "--json",
    ]);
    assert_eq!(t["vcpus"], 1, "{t}");
    assert_eq!(t["memory_mib"], 256, "{t}");
    assert!(t["state_bytes"].as_u64().unwrap() > 0, "{t}");
    // Asking again answers the same template.
    let again = home.json(&["warm", "--cpus", "1", "--memory", "256M", "--json"]);
    assert_eq!(again["key"], t["key"]);
    assert_eq!(templates(&home).len(), 1);
    assert_eq!(templates(&home)[0]["state"], "ready");
    let table = home.ok(&["warm", "--list"]);
    let header = table.lines().next().unwrap_or_default();
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("STATE") && header.contains("SIZE"),
        "{table}"
    );
    assert!(
        row.contains(" ready "),
        "a state, not a byte count, under STATE: {table}"
    );

    // The same checks, cold and warm.
    let (code, cold_out, err) = run(&home, "cold1", &["--rm", "--cold"]);
    assert_eq!(code, 7, "{err}");
    assert!(!err.contains("boot template"), "{err}");
    let t0 = Instant::now();
    let (code, warm_out, err) = run(&home, "warm1", &["--rm"]);
    let warm_time = t0.elapsed();
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("boot template"), "a warm start says so: {err}");
    let cold: Vec<&str> = cold_out.lines().collect();
    let warm: Vec<&str> = warm_out.lines().collect();
    assert_eq!(
        cold.len(),
        warm.len(),
        "cold:\n{cold_out}\nwarm:\n{warm_out}"
    );
    assert_eq!(cold[0], "cold1");
    assert_eq!(warm[0], "warm1", "the hostname is the VM's");
    assert_eq!(cold[1..], warm[1..], "cold:\n{cold_out}\nwarm:\n{warm_out}");
    // The 3 GiB work disk is seen at its size: bound after the restore.
    let kib: u64 = warm[3].parse().unwrap();
    assert!(kib > 2 << 20, "{warm_out}");
    eprintln!("warm vm run: {warm_time:?}");

    // Two warm VMs of one template: their random streams differ, and so
    // do their clocks from the template's.
    home.ok(&[
        "vm", "create", "busybox", "--name", "w1", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&[
        "vm", "create", "busybox", "--name", "w2", "--cpus", "1", "--memory", "256M",
    ]);
    for vm in ["w1", "w2"] {
        let r = home.json(&["vm", "start", vm, "--json"]);
        assert_eq!(r["warm"], true, "{r}");
    }
    let (a, b) = (uuids(&home, "w1"), uuids(&home, "w2"));
    assert!(a.iter().all(|u| !b.contains(u)), "{a:?} {b:?}");
    // Restarted cold on request, and the files written warm are there.
    home.ok(&[
        "vm",
        "exec",
        "w1",
        "--",
        "sh",
        "-c",
        "echo kept > /root/f; sync",
    ]);
    home.ok(&["vm", "stop", "w1"]);
    let r = home.json(&["vm", "start", "w1", "--cold", "--json"]);
    assert_eq!(r["warm"], false, "{r}");
    assert_eq!(
        home.ok(&["vm", "exec", "w1", "--", "cat", "/root/f"])
            .trim(),
        "kept"
    );

    // First use of a new shape boots cold and makes its template behind.
    home.ok(&[
        "vm", "create", "busybox", "--name", "n1", "--cpus", "1", "--memory", "320M",
    ]);
    let r = home.json(&["vm", "start", "n1", "--json"]);
    assert_eq!(r["warm"], false, "{r}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !templates(&home).iter().any(|t| t["memory_mib"] == 320) {
        assert!(
            Instant::now() < deadline,
            "no template made after first use"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    home.ok(&[
        "vm", "create", "busybox", "--name", "n2", "--cpus", "1", "--memory", "320M",
    ]);
    let r = home.json(&["vm", "start", "n2", "--json"]);
    assert_eq!(r["warm"], true, "{r}");

    // The daemon holds a template's RAM while VMs map it, and lets go of
    // it once none has for a while (ram_cache::KEEP, 30 s); the next warm
    // start loads it again.
    let daemon = home.json(&["daemon", "status", "--json"])["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap();
    assert!(template_ram_fds(daemon) > 0, "held while VMs run");
    home.ok(&["vm", "rm", "--force", "w1", "w2", "n1", "n2"]);
    let t = Instant::now();
    while template_ram_fds(daemon) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(45),
            "template RAM still held {:?} after the last VM went",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "template RAM let go {:?} after the last VM went",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_secs(25), "kept for a while");
    home.ok(&[
        "vm", "create", "busybox", "--name", "w3", "--cpus", "1", "--memory", "256M",
    ]);
    let r = home.json(&["vm", "start", "w3", "--json"]);
    assert_eq!(r["warm"], true, "{r}");
    assert_eq!(
        home.ok(&["vm", "exec", "w3", "--", "hostname"]).trim(),
        "w3"
    );
    assert_eq!(template_ram_fds(daemon), 1, "loaded again");
    home.ok(&["vm", "rm", "--force", "w3"]);

    // Templates go with their kernel.
    let kernels = home.json(&["kernel", "ls", "--json"]);
    let kid = kernels[0]["id"].as_str().unwrap().to_string();
    home.ok(&["kernel", "rm", &kid]);
    assert!(templates(&home).is_empty());
    assert!(!home.data_dir().join("templates").join(&kid).exists());
}

/// The template RAM images (sealed memfds) process `pid` holds open.
fn template_ram_fds(pid: u32) -> usize {
    procs::open_files_naming(pid, "banger-template-ram")
}

/// QEMUs whose arguments name `needle`.
fn qemus_naming(needle: &str) -> usize {
    procs::qemus_mentioning(needle).len()
}

#[test]
fn a_daemon_killed_while_making_a_template_leaves_nothing() {
    let Some(home) = boot_home_with(TestHome::new()) else {
        return;
    };
    let making = format!("{}/templates/.making/", home.data_dir().display());
    let mut warm = home
        .banger_std()
        .args(["warm", "--cpus", "1", "--memory", "256M"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the daemon once the template guest is up and booting.
    let deadline = Instant::now() + Duration::from_secs(60);
    let console_started = || {
        std::fs::read_dir(&making)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::metadata(e.path().join("console.log")).is_ok_and(|m| m.len() > 0))
    };
    while qemus_naming(&making) == 0 || !console_started() {
        assert!(Instant::now() < deadline, "no template boot started");
        std::thread::sleep(Duration::from_millis(50));
    }
    home.kill_daemon();
    let _ = warm.wait();
    // The next daemon (started by this command) cleans up at once.
    assert!(templates(&home).is_empty());
    assert_eq!(
        qemus_naming(&making),
        0,
        "a template QEMU outlived its daemon"
    );
    assert!(!home.data_dir().join("templates/.making").exists());
    // And a template can be made afterwards.
    let t = home.json(&["warm", "--cpus", "1", "--memory", "256M", "--json"]);
    assert_eq!(t["memory_mib"], 256, "{t}");
    assert_eq!(templates(&home).len(), 1);
    assert_eq!(templates(&home)[0]["state"], "ready");
    let table = home.ok(&["warm", "--list"]);
    let header = table.lines().next().unwrap_or_default();
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        header.contains("STATE") && header.contains("SIZE"),
        "{table}"
    );
    assert!(
        row.contains(" ready "),
        "a state, not a byte count, under STATE: {table}"
    );
}

/// `banger daemon stop` while the daemon makes a template in the
/// background (after a cold start): that template's QEMU must not run on
/// without an owner.
#[test]
fn a_daemon_stopped_while_making_a_template_leaves_nothing() {
    let Some(home) = boot_home_with(TestHome::with_config("[vm]\nwarm_templates = true\n")) else {
        return;
    };
    let making = format!("{}/templates/.making/", home.data_dir().display());
    home.ok(&[
        "vm", "create", "busybox", "--name", "c1", "--cpus", "1", "--memory", "256M",
    ]);
    let r = home.json(&["vm", "start", "c1", "--json"]);
    assert_eq!(r["warm"], false, "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while qemus_naming(&making) == 0 {
        assert!(
            Instant::now() < deadline,
            "no background template boot started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    home.ok(&["daemon", "stop"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemus_naming(&making) > 0 {
        assert!(
            Instant::now() < deadline,
            "a template QEMU outlived the daemon's stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!home.data_dir().join("templates/.making").exists());
    // The VM itself outlives the stop, as VMs do, and is re-adopted.
    assert_eq!(
        home.ok(&["vm", "exec", "c1", "--", "hostname"]).trim(),
        "c1"
    );
    home.ok(&["vm", "rm", "--force", "c1"]);
}

/// Warm VMs with a NIC, inside a namespace this test makes: each gets
/// its own address and MAC on eth0 (not the template's), the guests reach
/// each other and the gateway, and the host side reaches each one.
#[test]
fn warm_vms_with_a_nic_get_their_own_address_and_mac() {
    let host = banger_testkit::netns::NetNs::new("warmnet");
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.31.0.1/24\"\n\
                  dns_upstreams = [\"127.0.0.1:9\"]\n[vm]\nwarm_templates = true\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    let t = home.json(&["warm", "--cpus", "1", "--memory", "256M", "--json"]);
    assert_eq!(t["nic"], true, "{t}");
    let mut seen = Vec::new();
    for vm in ["wa", "wb"] {
        home.ok(&[
            "vm", "create", "busybox", "--name", vm, "--cpus", "1", "--memory", "256M",
        ]);
        let r = home.json(&["vm", "start", vm, "--json"]);
        assert_eq!(r["warm"], true, "{r}");
        let ip = r["vm"]["guest_ip"].as_str().unwrap().to_string();
        let out = home.ok(&[
            "vm", "exec", vm, "--", "sh", "-c",
            "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 2>/dev/null || ifconfig eth0; hostname",
        ]);
        assert!(out.contains(&ip), "eth0 carries {ip}: {out}");
        let mac = out.lines().next().unwrap().trim().to_string();
        assert_ne!(mac, "02:00:00:00:00:01", "the template's MAC stayed: {out}");
        assert!(out.trim_end().ends_with(vm), "{out}");
        // The host side of the namespace reaches the guest.
        let ping = host
            .command("ping")
            .args(["-c1", "-W5", &ip])
            .output()
            .unwrap();
        assert!(ping.status.success(), "ping {ip} from the host side");
        seen.push((ip, mac));
    }
    assert_ne!(seen[0], seen[1]);
    // Guest to guest and to the gateway.
    let out = home.ok(&[
        "vm",
        "exec",
        "wa",
        "--",
        "sh",
        "-c",
        &format!(
            "busybox ping -c1 -W5 {} && busybox ping -c1 -W5 172.31.0.1 && echo reached",
            seen[1].0
        ),
    ]);
    assert!(out.contains("reached"), "{out}");
    home.ok(&["vm", "rm", "--force", "wa", "wb"]);
}
