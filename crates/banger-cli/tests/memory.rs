//! Memory and disk a guest frees go back to the host, on one real QEMU
//! boot: a file deleted in the guest shrinks its sparse work disk on the
//! host (discard), 512 MiB the guest allocates and frees leave the VMM's
//! RSS within 30 s (the balloon's free page reporting), `vm set --memory`
//! on the running VM changes the guest's `MemTotal` (within what it booted
//! with), and `vm stats` shows guest-used memory beside the host's RSS.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home, procs};

fn exec(home: &TestHome, script: &str) -> String {
    home.ok(&["vm", "exec", "mem", "--", "sh", "-c", script])
}

/// The pid of the VM's VMM.
fn vmm_pid(home: &TestHome) -> u32 {
    u32::try_from(home.vmm_pid("mem")).unwrap()
}

fn rss_mib(home: &TestHome) -> u64 {
    procs::rss_kib(vmm_pid(home)).unwrap() / 1024
}

fn mem_total_mib(home: &TestHome) -> u64 {
    let out = exec(home, "head -1 /proc/meminfo");
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    kib / 1024
}

fn work_disk_mib(home: &TestHome) -> u64 {
    let path = home.json(&["vm", "show", "mem", "--json"])["work_disk"]
        .as_str()
        .unwrap()
        .to_string();
    (std::fs::metadata(path).unwrap().blocks() * 512) >> 20
}

/// Polls `f` until it holds, up to `within`; returns how long it took.
fn until(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    t.elapsed()
}

#[test]
fn freed_memory_and_deleted_files_go_back_to_the_host() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "mem", "--cpus", "1", "--memory", "1G",
    ]);
    home.ok(&["vm", "start", "mem"]);

    // Under TCG the VMM runs without transparent huge pages (each would
    // hold 2 MiB for a few KiB used); under KVM it keeps them.
    let pid = vmm_pid(&home);
    let tcg = procs::cmdline(pid).split(' ').any(|a| a.starts_with("tcg"));
    let thp = procs::thp_enabled(pid).expect("THP_enabled in the VMM's status");
    assert_eq!(
        thp, !tcg,
        "huge pages on ({thp}) exactly when not under TCG ({tcg})"
    );

    // Guest-used memory beside the host's view of the VMM.
    let stats = home.json(&["vm", "stats", "mem", "--json"]);
    let row = &stats.as_array().map_or(&stats, |a| &a[0]);
    assert!(row["memory_used_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(row["vmm_rss_bytes"].as_u64().unwrap() > 0, "{stats}");

    // A deleted file shrinks the host's sparse work disk.
    let before = work_disk_mib(&home);
    exec(&home, "head -c 67108864 /dev/zero > /root/big; sync");
    let grown = work_disk_mib(&home);
    assert!(
        grown >= before + 60,
        "64 MiB written: {before} -> {grown} MiB"
    );
    exec(&home, "rm /root/big; sync");
    let took = until(Duration::from_secs(30), "the work disk shrinking", || {
        work_disk_mib(&home) + 48 <= grown
    });
    eprintln!(
        "work disk {before} -> {grown} -> {} MiB allocated, given back in {took:?}",
        work_disk_mib(&home)
    );

    // 512 MiB allocated then freed in the guest leave the VMM's RSS.
    let base = rss_mib(&home);
    exec(
        &home,
        "mkdir -p /mnt/t && mount -t tmpfs -o size=600m none /mnt/t && \
         head -c 536870912 /dev/zero > /mnt/t/x",
    );
    let peak = rss_mib(&home);
    // Part of it may reuse pages the guest had touched before.
    assert!(
        peak >= base + 380,
        "512 MiB allocated: RSS {base} -> {peak} MiB"
    );
    exec(&home, "rm /mnt/t/x");
    let took = until(Duration::from_secs(30), "the VMM's RSS falling", || {
        rss_mib(&home) + 350 <= peak
    });
    eprintln!(
        "VMM RSS {base} -> {peak} -> {} MiB, given back in {took:?}",
        rss_mib(&home)
    );

    // Resized while it runs: the guest's MemTotal follows, within what it
    // booted with.
    let full = mem_total_mib(&home);
    home.ok(&["vm", "set", "mem", "--memory", "512M"]);
    until(
        Duration::from_secs(60),
        "MemTotal falling to 512 MiB",
        || mem_total_mib(&home) < 600,
    );
    let err = home.fails(&["vm", "set", "mem", "--memory", "2G"]);
    assert!(err.contains("booted with 1024 MiB"), "{err}");
    assert_eq!(
        home.json(&["vm", "show", "mem", "--json"])["spec"]["memory_mib"],
        512,
        "a refused resize changes nothing"
    );
    home.ok(&["vm", "set", "mem", "--memory", "1G"]);
    until(Duration::from_secs(60), "MemTotal growing back", || {
        mem_total_mib(&home) + 16 >= full
    });
    home.ok(&["vm", "rm", "--force", "mem"]);
}
