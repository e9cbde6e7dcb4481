//! The invariants the chaos test checks after each kill, with the next
//! daemon up: records and files agree and are whole, known_hosts has a
//! line for every VM and none other, no stray worker or VMM, no snapshot
//! left half-made, and a VM answers as itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, procs};

/// Does `pid` descend from `ancestor`?
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match procs::name_and_parent(pid) {
            Some((_, ppid)) if ppid > 1 => pid = ppid,
            _ => return false,
        }
    }
    false
}

/// The programs a daemon runs for an operation (not the VMMs, which are
/// meant to outlive it).
const WORKERS: &[&str] = &[
    "faked-sysv",
    "banger-rootfs",
    "fakeroot",
    "mkfs.ext4",
    "mke2fs",
    "debugfs",
    "e2fsck",
    "resize2fs",
];

/// Workers with no live daemon of this home above them. They get a few
/// seconds: the parent-death signal is delivered at once, but exiting is
/// not instant.
fn orphan_workers(home: &TestHome, daemon: Option<u32>) -> Vec<String> {
    // The daemon's children inherit its environment, which names its home.
    let home_dir = home.data_dir().display().to_string();
    let ours = |pid: u32| procs::has_env(pid, "BANGER_HOME", &home_dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let orphans: Vec<String> = procs::all_pids()
            .into_iter()
            .filter_map(|pid| {
                let (comm, _) = procs::name_and_parent(pid)?;
                let cmd = procs::cmdline(pid);
                let worker = WORKERS
                    .iter()
                    .any(|w| comm.starts_with(&w[..w.len().min(15)]));
                let owned = daemon.is_some_and(|d| descends_from(pid, d));
                (worker && !owned && ours(pid)).then(|| format!("{pid} {comm}: {cmd}"))
            })
            .collect();
        if orphans.is_empty() || Instant::now() > deadline {
            return orphans;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fsck_ok(path: &Path) -> bool {
    Command::new("e2fsck")
        .args(["-fn"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The VMM processes of this home: pid -> command line.
fn vmm_processes(home: &TestHome) -> Vec<(u32, String)> {
    let root = home.path().to_string_lossy().into_owned();
    procs::all_pids()
        .into_iter()
        .filter(|pid| procs::name_and_parent(*pid).is_some_and(|(c, _)| c.starts_with("qemu")))
        .map(|pid| (pid, procs::cmdline(pid)))
        .filter(|(_, cmd)| cmd.contains(&root))
        .collect()
}

/// Every invariant; returns the violations.
/// VMs whose recorded state disagrees with their VMM processes: running
/// with other than one (none when suspended), stopped with any.
fn vmm_mismatches(home: &TestHome) -> Vec<String> {
    let vms = home.json(&["vm", "ls", "--json"]);
    let vmms = vmm_processes(home);
    let mut bad = Vec::new();
    for vm in vms.as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        let dir = vm["dir"].as_str().unwrap();
        let running = vm["desired_state"] == "running" && vm["suspended"] != true;
        let live: Vec<u32> = vmms
            .iter()
            .filter(|(_, cmd)| cmd.contains(dir))
            .map(|(pid, _)| *pid)
            .collect();
        match (running, live.len()) {
            (true, 1) | (false, 0) => {}
            (true, n) => bad.push(format!("vm {name} recorded running with {n} VMMs")),
            (false, n) => bad.push(format!(
                "vm {name} recorded stopped with {n} VMMs: {live:?}"
            )),
        }
    }
    bad
}

pub(crate) fn check_invariants(home: &TestHome) -> Vec<String> {
    let mut bad = Vec::new();
    // Starting the next daemon (any command does) runs the reconcile.
    let vms = home.json(&["vm", "ls", "--json"]);
    let images = home.json(&["image", "ls", "--json"]);
    let kernels = home.json(&["kernel", "ls", "--json"]);
    let daemon = home.json(&["daemon", "status", "--json"])["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok());
    let data = home.data_dir();

    let tmp: Vec<_> = std::fs::read_dir(data.join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !tmp.is_empty() {
        bad.push(format!("tmp/ not empty: {tmp:?}"));
    }
    for (dir, records) in [("vms", &vms), ("images", &images), ("kernels", &kernels)] {
        let ids: HashSet<&str> = records
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        for entry in std::fs::read_dir(data.join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Unpacked trees of finished imports are removed in the
            // background; they are scratch, not objects.
            if !ids.contains(name.as_str()) && !name.contains(".staging-") {
                bad.push(format!("{dir}/{name} has no record"));
            }
        }
        for id in &ids {
            if !data.join(dir).join(id).is_dir() {
                bad.push(format!("{dir}/{id} is recorded but missing"));
            }
        }
    }
    for k in kernels.as_array().unwrap() {
        for field in ["kernel_path", "modules_path"] {
            if let Some(p) = k[field].as_str()
                && !Path::new(p).exists()
            {
                bad.push(format!("kernel {}: {field} {p} missing", k["name"]));
            }
        }
    }
    for i in images.as_array().unwrap() {
        let base = PathBuf::from(i["base_path"].as_str().unwrap());
        if !fsck_ok(&base) {
            bad.push(format!(
                "image {}: {} is not whole",
                i["name"],
                base.display()
            ));
        }
    }
    // Every blob in the cache is whole: its content hashes to its name.
    // (Partial downloads are named `.partial-*` and are not blobs yet.)
    if let Ok(dir) = std::fs::read_dir(data.join("blobs/sha256")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            if banger_testkit::registry::sha256(&bytes) != format!("sha256:{name}") {
                bad.push(format!("blob {name} is not whole"));
            }
        }
    }
    // A VMM that an interrupted stop had already told to power off may
    // still be exiting when the next daemon first lists it (running, its
    // /proc entry half gone): give in-flight exits 3 s to settle, then
    // count what persists.
    let mut mismatched = vmm_mismatches(home);
    for _ in 0..15 {
        if mismatched.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        mismatched = vmm_mismatches(home);
    }
    bad.extend(mismatched);
    for vm in vms.as_array().unwrap() {
        let name = vm["name"].as_str().unwrap();
        let running = vm["desired_state"] == "running";
        if !running {
            for disk in ["overlay_disk", "work_disk"] {
                let p = PathBuf::from(vm[disk].as_str().unwrap());
                if !fsck_ok(&p) {
                    bad.push(format!("vm {name}: {disk} {} is not whole", p.display()));
                }
            }
        }
    }
    bad.extend(known_hosts_violations(home, &vms));
    bad.extend(snapshot_violations(home));
    bad.extend(
        orphan_workers(home, daemon)
            .into_iter()
            .map(|o| format!("orphan worker {o}")),
    );
    bad
}

/// Every VM has its line in banger's known_hosts (else `vm ssh` could
/// never trust it) and no line names a VM that is gone.
fn known_hosts_violations(home: &TestHome, vms: &serde_json::Value) -> Vec<String> {
    let text = std::fs::read_to_string(home.data_dir().join("ssh/known_hosts")).unwrap_or_default();
    let lines: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|hosts| hosts.split(','))
        .filter_map(|h| h.strip_prefix("banger-vm-"))
        .collect();
    let ids: HashSet<&str> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    let mut bad: Vec<String> = ids
        .difference(&lines)
        .map(|id| format!("vm {id} has no known_hosts line"))
        .collect();
    bad.extend(
        lines
            .difference(&ids)
            .map(|id| format!("known_hosts names vm {id}, which does not exist")),
    );
    bad
}

/// Every snapshot row is `ready` (a `saving` one belongs to a save the
/// next daemon must have removed) with its disks and state on disk, and no
/// directory under `snapshots/` lacks a row.
fn snapshot_violations(home: &TestHome) -> Vec<String> {
    let mut bad = Vec::new();
    let snaps = home.json(&["snapshot", "ls", "--json"]);
    let mut ids = HashSet::new();
    for s in snaps.as_array().unwrap() {
        let name = s["name"].as_str().unwrap_or("?");
        ids.insert(s["id"].as_str().unwrap_or("").to_string());
        if s["state"] != "ready" {
            bad.push(format!("snapshot {name} is {}", s["state"]));
            continue;
        }
        let dir = PathBuf::from(s["dir"].as_str().unwrap_or(""));
        for f in ["overlay.ext4", "work.ext4"] {
            if !fsck_ok(&dir.join(f)) {
                bad.push(format!("snapshot {name}: {f} is not whole"));
            }
        }
        if !dir.join("qemu.migration").is_file() {
            bad.push(format!(
                "snapshot {name}: no saved state in {}",
                dir.display()
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir(home.data_dir().join("snapshots")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !ids.contains(&name) {
                bad.push(format!("snapshots/{name} has no record"));
            }
        }
    }
    bad
}

/// QEMU's run state and migration status through its QMP socket, to say
/// why a guest does not answer; best effort.
fn qemu_status(socket: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let ask = || -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(
            b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n\
              {\"execute\":\"query-migrate\"}\n",
        )?;
        let mut lines = BufReader::new(s).lines();
        let mut found = Vec::new();
        for _ in 0..4 {
            let line = lines.next().transpose()?.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(st) = v["return"]["status"].as_str() {
                found.push(st.to_string());
            }
        }
        Ok(format!("run state, migration: {found:?}"))
    };
    ask().unwrap_or_else(|e| format!("no answer: {e}"))
}

/// `vm` is running, not paused, and its guest answers an exec naming
/// itself: a VM a save left frozen, or a restore left with its source's
/// identity, fails this.
pub(crate) fn answers_as(home: &TestHome, vm: &str) -> Vec<String> {
    let shown = home.json(&["vm", "show", vm, "--json"]);
    if shown["desired_state"] != "running" || shown["paused"] == true {
        return vec![format!(
            "vm {vm} is {} (paused: {})",
            shown["desired_state"], shown["paused"]
        )];
    }
    let out = home
        .banger()
        .args(["vm", "exec", vm, "--", "hostname"])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let hostname = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || hostname != vm {
        let qmp = home
            .data_dir()
            .join("run/vms")
            .join(shown["id"].as_str().unwrap_or(""))
            .join("control.sock");
        return vec![format!(
            "vm {vm} does not answer as itself: {hostname:?} {} (qemu: {})",
            String::from_utf8_lossy(&out.stderr).trim(),
            qemu_status(&qmp)
        )];
    }
    Vec::new()
}
