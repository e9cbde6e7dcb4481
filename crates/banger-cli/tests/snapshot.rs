//! Snapshots on a real QEMU boot: `vm snapshot` → `vm restore` brings back
//! the guest's memory (a counting process goes on from where it was, the
//! kernel's uptime goes on, no boot) and its disks as they were; `vm fork`
//! makes a second VM that runs beside the first with its own name,
//! hostname, host key, random stream and disks. Bad input is one line:
//! a stopped or missing VM, a restore over a running VM or onto a name in
//! use, a snapshot of another agent. With a NIC (inside network namespaces
//! the test makes), two forks of one VM each take their own address and
//! MAC, answer on them from the host and resolve by name.

use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home, boot_home_with};

fn exec(home: &TestHome, vm: &str, script: &str) -> String {
    home.ok(&["vm", "exec", vm, "--", "sh", "-c", script])
        .trim()
        .to_string()
}

fn count(home: &TestHome, vm: &str) -> u64 {
    let out = exec(home, vm, "cat /root/count");
    out.parse().unwrap_or_else(|_| panic!("count {out:?}"))
}

fn uptime(home: &TestHome, vm: &str) -> f64 {
    let out = exec(home, vm, "cut -d' ' -f1 /proc/uptime");
    out.parse().unwrap_or_else(|_| panic!("uptime {out:?}"))
}

fn uuids(home: &TestHome, vm: &str) -> Vec<String> {
    exec(
        home,
        vm,
        "for i in 1 2 3; do cat /proc/sys/kernel/random/uuid; done",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn snapshot_restore_and_fork_keep_memory_and_split_identity() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--cpus", "1", "--memory", "256M",
    ]);
    let err = home.fails(&["vm", "snapshot", "bb"]);
    assert!(err.contains("not running"), "{err}");
    let err = home.fails(&["vm", "snapshot", "nosuchvm"]);
    assert!(err.contains("nosuchvm"), "{err}");
    // A fork of a stopped VM is refused before anything is made (the
    // agent's identity would build the kernel's initramfs).
    let before = home.data_files();
    let err = home.fails(&["vm", "fork", "bb", "bb9"]);
    assert!(err.contains("not running"), "{err}");
    assert_eq!(home.data_files(), before, "a refused fork made files");
    home.ok(&["vm", "start", "bb"]);

    // A process whose count lives in its memory; the file is its readout.
    exec(
        &home,
        "bb",
        "busybox setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /root/count; sleep 0.2; done' \
         </dev/null >/dev/null 2>&1 &",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_opt(&home) < Some(3) {
        assert!(Instant::now() < deadline, "the counter never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    exec(&home, "bb", "echo before > /root/mark");
    let at_save = count(&home, "bb");
    let up_save = uptime(&home, "bb");
    let snap = home.json(&["vm", "snapshot", "bb", "--name", "s1", "--json"]);
    assert_eq!(snap["state"], "ready", "{snap}");
    assert!(snap["state_bytes"].as_u64().unwrap() > 0, "{snap}");
    let err = home.fails(&["vm", "snapshot", "bb", "--name", "s1"]);
    assert!(err.contains("already exists"), "{err}");
    let listed = home.json(&["snapshot", "ls", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(home.ok(&["snapshot", "show", "s1"]).contains("qemu"));

    // The VM runs on after the save, and moves away from the saved state.
    exec(&home, "bb", "echo after > /root/mark; sync");
    std::thread::sleep(Duration::from_secs(3));
    let at_stop = count(&home, "bb");
    assert!(at_stop > at_save + 5, "{at_save} -> {at_stop}");
    let err = home.fails(&["vm", "restore", "s1"]);
    assert!(err.contains("is running"), "{err}");
    home.ok(&["vm", "stop", "bb", "--timeout", "30"]);

    // Restore in place: the same process, counting on from the save; the
    // kernel did not boot again; the disk is as it was at the save.
    let report = home.json(&["vm", "restore", "s1", "--json"]);
    assert_eq!(report["vm"]["name"], "bb", "{report}");
    let restored = count(&home, "bb");
    assert!(
        restored >= at_save && restored < at_stop,
        "counter after restore {restored}, saved at {at_save}, stopped at {at_stop}"
    );
    assert!(uptime(&home, "bb") >= up_save, "the guest rebooted");
    assert_eq!(exec(&home, "bb", "cat /root/mark"), "before");
    std::thread::sleep(Duration::from_secs(1));
    assert!(count(&home, "bb") > restored, "the counter stopped");

    // A fork runs beside its source with its own identity.
    let err = home.fails(&["vm", "restore", "s1", "--name", "bb"]);
    assert!(err.contains("already exists"), "{err}");
    let fork = home.json(&["vm", "fork", "bb", "bb2", "--json"]);
    assert_eq!(fork["vm"]["name"], "bb2", "{fork}");
    let vms = home.json(&["vm", "ls", "--json"]);
    let (a, b) = (&vms[0], &vms[1]);
    assert_eq!(
        (a["name"].as_str(), b["name"].as_str()),
        (Some("bb"), Some("bb2"))
    );
    assert_eq!(
        (a["desired_state"].as_str(), b["desired_state"].as_str()),
        (Some("running"), Some("running"))
    );
    assert_ne!(a["guest_ip"], b["guest_ip"]);
    assert_ne!(a["vsock_cid"], b["vsock_cid"]);
    assert_eq!(exec(&home, "bb", "hostname"), "bb");
    assert_eq!(exec(&home, "bb2", "hostname"), "bb2");
    assert_eq!(exec(&home, "bb2", "cat /etc/hostname"), "bb2");
    let (ua, ub) = (uuids(&home, "bb"), uuids(&home, "bb2"));
    assert_eq!((ua.len(), ub.len()), (3, 3));
    for u in &ua {
        assert!(!ub.contains(u), "forks share random state: {ua:?} {ub:?}");
    }
    let key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
    let (ka, kb) = (exec(&home, "bb", key), exec(&home, "bb2", key));
    assert!(kb.starts_with("ssh-ed25519 "), "{kb}");
    assert_ne!(ka, kb, "the fork kept its source's host key");
    let known = std::fs::read_to_string(home.data_dir().join("ssh/known_hosts")).unwrap();
    let kb_blob = kb.split_whitespace().nth(1).unwrap();
    assert!(known.contains(kb_blob), "fork's key not in known_hosts");
    // The fork's counter is the same process, going on.
    let forked = count(&home, "bb2");
    std::thread::sleep(Duration::from_secs(1));
    assert!(count(&home, "bb2") > forked);
    // Disks are the fork's own.
    exec(&home, "bb2", "echo fork > /root/only-fork; sync");
    exec(&home, "bb", "echo source > /root/only-source; sync");
    assert_eq!(
        exec(
            &home,
            "bb",
            "test -e /root/only-fork && echo yes || echo no"
        ),
        "no"
    );
    assert_eq!(
        exec(
            &home,
            "bb2",
            "test -e /root/only-source && echo yes || echo no"
        ),
        "no"
    );

    // A restore as a new VM, then nothing half-made when one is refused:
    // a snapshot of another guest agent than the daemon's.
    let s2 = home.json(&["vm", "snapshot", "bb2", "--name", "s2", "--json"]);
    assert_eq!(s2["source_vm_name"], "bb2");
    home.ok(&["vm", "restore", "s2", "--name", "bb3"]);
    assert_eq!(exec(&home, "bb3", "hostname"), "bb3");
    home.ok(&["vm", "rm", "--force", "bb3"]);
    let other_agent = home.path().join("agent-changed");
    let agent = std::env::var_os("BANGER_AGENT_BIN").expect("agent");
    let mut bytes = std::fs::read(&agent).unwrap();
    bytes.push(0);
    std::fs::write(&other_agent, bytes).unwrap();
    home.ok(&["daemon", "stop"]);
    // SAFETY: this test is the only thread of its binary touching the
    // environment; the daemon it starts next inherits the new agent.
    unsafe { std::env::set_var("BANGER_AGENT_BIN", &other_agent) };
    // The daemon's initramfs cache (per kernel and agent) may grow; nothing
    // else may change.
    let files = || {
        let mut f = home.data_files();
        f.retain(|p| !(p.starts_with("kernels/") && p.contains("/initramfs-")));
        f
    };
    let before = files();
    let err = home.fails(&["vm", "restore", "s2", "--name", "bb4"]);
    // SAFETY: as above.
    unsafe { std::env::set_var("BANGER_AGENT_BIN", &agent) };
    assert!(err.contains("another guest agent"), "{err}");
    assert_eq!(files(), before, "a refused restore left files");
    assert!(!home.ok(&["vm", "ls"]).contains("bb4"));

    // Removing the snapshots takes nothing from the VMs restored from
    // them: their disks are copies, and the state was read at the load.
    home.ok(&["snapshot", "rm", "s1", "s2"]);
    assert_eq!(exec(&home, "bb2", "cat /root/only-fork"), "fork");
    home.ok(&["vm", "restart", "bb"]);
    assert_eq!(exec(&home, "bb", "cat /root/mark"), "before");
    assert_eq!(exec(&home, "bb", "cat /root/only-source"), "source");
    let err = home.fails(&["snapshot", "rm", "s1"]);
    assert!(err.contains("s1"), "{err}");
    assert!(
        !home
            .data_dir()
            .join("snapshots")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    home.ok(&["vm", "rm", "--force", "bb", "bb2"]);
}

/// The guest's counter, or None before it first wrote.
fn count_opt(home: &TestHome) -> Option<u64> {
    let out = home
        .banger()
        .args(["vm", "exec", "bb", "--", "cat", "/root/count"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A command in `ns`: (success, stdout + stderr).
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

/// Two forks of a VM with a NIC, side by side with it, all inside
/// namespaces of the test's own (`host` plays the host, `inet` its
/// upstream, so no resolver or route leads out). Each fork has its own
/// address (recorded and on its `eth0`) and MAC (on `eth0` and on the wire,
/// as the host's neighbour table learns it), answers there from the host
/// through a server that ran in the source before the fork, resolves as
/// `<name>.vm`, reaches the other fork, and has its own host key, random
/// stream and disks.
#[test]
fn two_forks_with_a_nic_take_their_own_address_mac_and_name() {
    let host = NetNs::new("forkh");
    let inet = NetNs::new("forki");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.202.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.202.0.2/24", "dev", "eth0"]);
    host.ip(&["route", "add", "default", "via", "10.202.0.2"]);
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.29.0.1/24\"\n\
                  dns_upstreams = [\"10.202.0.2:53\"]\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    home.ok(&[
        "vm", "create", "busybox", "--name", "src", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "src"]);
    // A server started before the forks: each fork runs its own copy of
    // the process, which must answer on the fork's new address.
    exec(
        &home,
        "src",
        "mkdir -p /tmp/www && hostname > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www",
    );
    home.ok(&["vm", "fork", "src", "f1"]);
    home.ok(&["vm", "fork", "src", "f2"]);
    let vms = ["src", "f1", "f2"];
    for vm in vms {
        exec(&home, vm, "hostname > /tmp/www/index.html");
    }

    let mut ips = Vec::new();
    let mut macs = Vec::new();
    for vm in vms {
        let shown = home.json(&["vm", "show", vm, "--json"]);
        assert_eq!(shown["desired_state"], "running", "{shown}");
        let ip = shown["guest_ip"].as_str().unwrap().to_string();
        assert_eq!(exec(&home, vm, "hostname"), vm);
        let addrs = exec(&home, vm, "busybox ip -4 -o addr show dev eth0");
        assert!(
            addrs.contains(&format!("inet {ip}/24")),
            "{vm}: eth0 lacks {ip}: {addrs}"
        );
        assert_eq!(
            addrs.matches("inet ").count(),
            1,
            "{vm}: eth0 kept another address: {addrs}"
        );
        let mac = exec(&home, vm, "cat /sys/class/net/eth0/address");
        // From the host: the guest answers on its address, through the
        // server it inherited, with its own name.
        let (ok, out) = in_ns(&host, "ping", &["-c1", "-W5", &ip]);
        assert!(ok, "ping {vm} at {ip}: {out}");
        let url = format!("http://{ip}:8000/index.html");
        let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "10", &url]);
        assert!(ok && out.trim() == vm, "curl {url}: {out}");
        // The MAC on the wire is the one on eth0.
        let (_, neigh) = in_ns(&host, "ip", &["neigh", "show", &ip]);
        assert!(
            neigh.contains(&format!("lladdr {mac}")),
            "{vm}: the host learned another MAC than eth0's {mac}: {neigh}"
        );
        let (ok, out) = in_ns(
            &host,
            "dig",
            &[
                "+short",
                "+time=3",
                "-b",
                "127.0.0.1",
                "@172.29.0.1",
                &format!("{vm}.vm"),
            ],
        );
        assert!(ok && out.trim() == ip, "dig {vm}.vm: {out}, not {ip}");
        ips.push(ip);
        macs.push(mac);
    }
    for (what, v) in [("address", &ips), ("mac", &macs)] {
        let distinct: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(distinct.len(), 3, "{what}s shared: {v:?}");
    }
    // Fork to fork, by address.
    let out = exec(
        &home,
        "f1",
        &format!("busybox ping -c1 -W5 {} >/dev/null && echo ok", ips[2]),
    );
    assert_eq!(out, "ok", "f1 cannot reach f2");

    let key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
    let keys: std::collections::HashSet<String> = vms.iter().map(|v| exec(&home, v, key)).collect();
    assert_eq!(keys.len(), 3, "host keys shared: {keys:?}");
    let streams: Vec<Vec<String>> = vms.iter().map(|v| uuids(&home, v)).collect();
    for (i, a) in streams.iter().enumerate() {
        for b in &streams[i + 1..] {
            assert!(
                a.iter().all(|u| !b.contains(u)),
                "random streams shared: {streams:?}"
            );
        }
    }
    for vm in vms {
        exec(&home, vm, &format!("echo {vm} > /root/only-{vm}; sync"));
    }
    for vm in vms {
        let seen = exec(&home, vm, "ls /root | grep only- | tr '\\n' ' '");
        assert_eq!(seen, format!("only-{vm}"), "{vm} sees others' writes");
    }
    home.ok(&["vm", "rm", "--force", "src", "f1", "f2"]);

    // A VM made without a NIC on this daemon with host networking: its
    // snapshot restores under a new name, without a NIC as it was saved.
    home.ok(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "lone",
        "--cpus",
        "1",
        "--memory",
        "256M",
        "--network",
        "none",
    ]);
    home.ok(&["vm", "start", "lone"]);
    exec(&home, "lone", "echo kept > /root/note; sync");
    home.ok(&["vm", "snapshot", "lone", "--name", "lone-snap"]);
    home.ok(&["vm", "restore", "lone-snap", "--name", "lone2"]);
    assert_eq!(exec(&home, "lone2", "cat /root/note"), "kept");
    assert_eq!(exec(&home, "lone2", "hostname"), "lone2");
    assert_eq!(
        exec(&home, "lone2", "ls /sys/class/net | tr '\\n' ' '"),
        "lo",
        "restored without a NIC"
    );
    home.ok(&["vm", "rm", "--force", "lone", "lone2"]);
}
