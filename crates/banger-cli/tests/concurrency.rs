//! Many operations at once against one daemon: parallel creates and runs
//! get unique identities, listings stay fast while VMs boot, and a guest
//! that stops answering stalls nobody but itself.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home, fake_bzimage, require_tool, tiny_rootfs};

/// Run `banger ARGS` on a thread per entry, all at once.
fn parallel(home: &TestHome, runs: Vec<Vec<String>>) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|args| {
                let mut cmd = home.banger_std();
                cmd.args(&args).stdin(Stdio::null());
                s.spawn(move || cmd.output().expect("run banger"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn assert_all_ok(outputs: &[Output]) {
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "run {i} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn assert_unique(vms: &[serde_json::Value], field: &str) {
    let values: HashSet<String> = vms.iter().map(|v| v[field].to_string()).collect();
    assert_eq!(values.len(), vms.len(), "{field} collides: {vms:#?}");
}

#[test]
fn twenty_parallel_creates_get_unique_identities() {
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("fakeroot", "fakeroot");
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    fake_bzimage(&k, "6.1.0-test");
    home.ok(&["kernel", "import", k.to_str().unwrap()]);
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);

    let runs = (0..20)
        .map(|_| vec!["vm".into(), "create".into(), "tiny".into()])
        .collect();
    assert_all_ok(&parallel(&home, runs));
    let vms = home.json(&["vm", "ls", "--json"]);
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 20);
    for field in ["id", "name", "guest_ip", "vsock_cid", "dir"] {
        assert_unique(vms, field);
    }
    // The MAC is not in the record: the daemon derives it from the id
    // (stable across restarts), so check what it would give each VM.
    let macs: HashSet<String> = vms
        .iter()
        .map(|v| banger_core::network::mac_for(v["id"].as_str().unwrap()))
        .collect();
    assert_eq!(macs.len(), vms.len(), "MACs collide: {macs:?}");
    for vm in vms {
        for disk in ["overlay_disk", "work_disk"] {
            assert!(Path::new(vm[disk].as_str().unwrap()).is_file(), "{vm}");
        }
    }
}

/// `GET /v1/vms` straight on the daemon's socket: the daemon's answer time,
/// without a CLI process start in it.
fn list_latency(socket: &Path) -> Duration {
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).expect("connect to bangerd");
    s.write_all(b"GET /v1/vms HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    t.elapsed()
}

fn socket_of(home: &TestHome) -> PathBuf {
    PathBuf::from(
        home.json(&["daemon", "status", "--json"])["socket"]
            .as_str()
            .unwrap(),
    )
}

#[test]
fn eight_parallel_runs_while_listings_stay_fast() {
    let Some(home) = boot_home() else { return };
    let socket = socket_of(&home);
    let runs: Vec<Vec<String>> = (0..8)
        .map(|i| {
            ["vm", "run", "busybox", "--rm", "--memory", "256M", "--name"]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    format!("par-{i}"),
                    "--".into(),
                    "sh".into(),
                    "-c".into(),
                    format!("test $(hostname) = par-{i} && exit {i}"),
                ])
                .collect()
        })
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (outputs, latencies) = std::thread::scope(|s| {
        let lister = s.spawn(|| {
            let mut lat = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                lat.push(list_latency(&socket));
                std::thread::sleep(Duration::from_millis(100));
            }
            lat
        });
        let outputs: Vec<Output> = runs
            .into_iter()
            .map(|args| {
                let mut cmd = home.banger_std();
                cmd.args(&args).stdin(Stdio::null());
                s.spawn(move || cmd.output().expect("run banger"))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (outputs, lister.join().unwrap())
    });
    for (i, out) in outputs.iter().enumerate() {
        assert_eq!(
            out.status.code(),
            Some(i32::try_from(i).unwrap()),
            "run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // --rm removed them all, and no VMM is left.
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
    let mut sorted = latencies.clone();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let max = *sorted.last().unwrap();
    eprintln!(
        "vm ls while 8 VMs boot: {} samples, p50 {:?}, max {:?}",
        sorted.len(),
        p50,
        max
    );
    assert!(sorted.len() >= 5, "too few samples: {sorted:?}");
    // Before listings stopped waiting on VM locks, one took as long as the
    // boot it waited behind: seconds.
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    assert!(max < Duration::from_millis(1000), "max {max:?}");
}

/// One QMP command on a QEMU control socket.
fn qmp(socket: &Path, command: &str) {
    let s = UnixStream::connect(socket).expect("connect to QMP");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap(); // greeting
    for cmd in ["qmp_capabilities", command] {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
            assert!(!line.contains("\"error\""), "{cmd}: {line}");
        }
    }
}

#[test]
fn frozen_guest_does_not_delay_other_vms() {
    let Some(home) = boot_home() else { return };
    for name in ["frozen", "lively"] {
        home.ok(&[
            "vm", "create", "busybox", "--name", name, "--memory", "256M",
        ]);
    }
    let starts = parallel(
        &home,
        ["frozen", "lively"]
            .iter()
            .map(|n| vec!["vm".into(), "start".into(), n.to_string()])
            .collect(),
    );
    assert_all_ok(&starts);
    // A new daemon has no agent connections yet: the first exec of each VM
    // connects, which is where one stuck guest used to hold everyone up.
    home.kill_daemon();
    let qmp_socket = PathBuf::from(
        home.vm_handles("frozen").unwrap()["api_socket"]
            .as_str()
            .unwrap(),
    );
    qmp(&qmp_socket, "stop");

    let mut stuck = home.banger_std();
    stuck
        .args(["vm", "exec", "frozen", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut stuck = stuck.spawn().unwrap();
    // Its session is open (the CLI writes the exec as soon as it connects).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !banger_testkit::procs::has_socket(stuck.id()) {
        assert!(Instant::now() < deadline, "the stuck exec never connected");
        std::thread::sleep(Duration::from_millis(20));
    }

    let t = Instant::now();
    assert_eq!(
        home.ok(&["vm", "exec", "lively", "--", "echo", "hi"])
            .trim(),
        "hi"
    );
    let exec = t.elapsed();
    let t = Instant::now();
    home.ok(&["vm", "stop", "lively"]);
    let stop = t.elapsed();
    eprintln!("while another guest is frozen: exec {exec:?}, stop {stop:?}");
    // The frozen guest's agent connect times out after 10 s.
    assert!(exec < Duration::from_secs(5), "exec took {exec:?}");
    assert!(stop < Duration::from_secs(8), "stop took {stop:?}");

    qmp(&qmp_socket, "cont");
    let _ = stuck.kill();
    let _ = stuck.wait();
    home.ok(&["vm", "kill", "frozen"]);
}
