//! `banger vm cp` end to end under QEMU with the busybox image: a tree with
//! a symlink, a 0600 file with another owner and an old mtime, a setuid
//! file and a large file, copied in and back out (`--archive`), compared
//! byte for byte and by mode, owner and mtime, then out without it (no
//! setuid bit, the caller's owner), with the CLI's peak resident memory
//! (VmHWM) and the daemon's growth in it bounded; docker cp's naming
//! rules, `-` tar streams, and errors that name the path.
//!
//! The large file is `BANGER_TEST_CP_MIB` MiB: 1024 in the suite
//! (scripts/test.sh sets it), 64 when run alone. 1 GiB takes about 27 s
//! each way (2026-12-07: in 27.2 s, out 26.2 s, the whole test 88 s; the
//! CLI peaked at 14 MiB, and bangerd grew by 1.6 MiB). Copies carry every
//! byte (no hole detection), so a sparse file would not be quicker.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use banger_testkit::{TestHome, boot_home, procs};

/// The bound on the CLI's peak RSS during the big copy.
const HWM_BOUND_KIB: u64 = 64 * 1024;

/// The bound on how far bangerd's peak RSS may grow during the big copies.
/// Its level before them is not bounded here: in a debug build most of it
/// is the 66 MB binary's own pages (CI measured 62 MiB before a copy that
/// then added 2 MiB).
const DAEMON_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// Runs `banger ARGS` to the end, sampling its VmHWM (monotonic, so the
/// last sample before exit is its peak): (exit code, stderr, peak KiB).
fn run_watched(home: &TestHome, args: &[&str]) -> (i32, String, u64) {
    let mut child = home
        .banger_std()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    loop {
        if let Some(k) = procs::hwm_kib(pid) {
            peak = peak.max(k);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, err, peak)
}

fn exec(home: &TestHome, script: &str) -> String {
    home.ok(&["vm", "exec", "bb", "--", "sh", "-c", script])
}

/// A file of a non-repeating pattern (no run of zeros a sparse copy or a
/// compressor could hide).
fn pattern_file(path: &Path, bytes: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = bytes;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap();
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let k = fb.read(&mut bb[nb..na]).unwrap();
            if k == 0 {
                return false;
            }
            nb += k;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

fn md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn cp_trees_in_and_out_with_modes_owners_links_and_bounded_memory() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "bb"]);
    let info = home.json(&["daemon", "status", "--json"]);
    let daemon = u32::try_from(info["pid"].as_i64().unwrap()).unwrap();

    let mib: u64 = std::env::var("BANGER_TEST_CP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tree = home.path().join("src/tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("secret"), "secret\n").unwrap();
    std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(tree.join("secret"), Some(1234), Some(5678)).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(tree.join("secret"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(tree.join("bin/suid"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        tree.join("bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("secret", tree.join("link")).unwrap();
    pattern_file(&tree.join("big"), mib << 20);

    // Measure the daemon from here: importing the image and booting grew
    // it before (writing 5 to clear_refs resets VmHWM to the current RSS).
    std::fs::write(format!("/proc/{daemon}/clear_refs"), "5").unwrap();
    let daemon_before = procs::hwm_kib(daemon).unwrap();

    // In: an existing directory receives the tree under its own name.
    let t = Instant::now();
    let (code, err, cli_in) = run_watched(&home, &["vm", "cp", tree.to_str().unwrap(), "bb:/root"]);
    let took_in = t.elapsed();
    assert_eq!(code, 0, "{err}");
    let listing = exec(
        &home,
        "cd /root/tree && stat -c '%n %a %u %g %Y' secret bin/suid big && busybox readlink link \
         && busybox md5sum big",
    );
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[0], "secret 600 1234 5678 1000000000", "{listing}");
    assert!(lines[1].starts_with("bin/suid 4755 0 0 "), "{listing}");
    assert!(lines[2].starts_with("big 644 0 0 "), "{listing}");
    assert_eq!(lines[3], "secret", "{listing}");
    assert!(lines[4].starts_with(&md5(&tree.join("big"))), "{listing}");

    // Out: into an existing host directory, under the source's name; in
    // archive mode, so owners and the setuid bit come back too.
    let back = home.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let t = Instant::now();
    let (code, err, cli_out) = run_watched(
        &home,
        &["vm", "cp", "-a", "bb:/root/tree", back.to_str().unwrap()],
    );
    let took_out = t.elapsed();
    assert_eq!(code, 0, "{err}");
    let daemon_hwm = procs::hwm_kib(daemon).unwrap();
    let back = back.join("tree");
    for f in ["secret", "bin/suid", "big", "bin", "."] {
        let (a, b) = (
            std::fs::symlink_metadata(tree.join(f)).unwrap(),
            std::fs::symlink_metadata(back.join(f)).unwrap(),
        );
        assert_eq!(
            (a.mode(), a.uid(), a.gid(), a.mtime(), a.len()),
            (b.mode(), b.uid(), b.gid(), b.mtime(), b.len()),
            "{f}"
        );
        if a.is_file() {
            assert!(same_bytes(&tree.join(f), &back.join(f)), "{f} differs");
        }
    }
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("secret")
    );
    let rate = |d: Duration| (mib as f64) / d.as_secs_f64();
    eprintln!(
        "vm cp of a {mib} MiB tree: in {took_in:?} ({:.1} MiB/s, CLI peak {cli_in} KiB), \
         out {took_out:?} ({:.1} MiB/s, CLI peak {cli_out} KiB); bangerd VmHWM {daemon_before} KiB \
         before, {daemon_hwm} KiB after",
        rate(took_in),
        rate(took_out)
    );
    assert!(
        daemon_hwm - daemon_before < DAEMON_GROWTH_BOUND_KIB,
        "bangerd grew from {daemon_before} to {daemon_hwm} KiB"
    );
    for (who, kib) in [
        ("the CLI copying in", cli_in),
        ("the CLI copying out", cli_out),
    ] {
        assert!(kib < HWM_BOUND_KIB, "{who} peaked at {kib} KiB");
    }
    std::fs::remove_file(tree.join("big")).unwrap();
    exec(&home, "rm /root/tree/big");

    // Without --archive what lands is the caller's, without setuid bits.
    let plain = home.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    home.ok(&["vm", "cp", "bb:/root/tree", plain.to_str().unwrap()]);
    let me = nix::unistd::geteuid().as_raw();
    for (f, mode) in [("tree/bin/suid", 0o755), ("tree/secret", 0o600)] {
        let m = std::fs::metadata(plain.join(f)).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (mode, me), "{f}");
    }

    // A new name: a file, then a directory's contents (`SRC/.`).
    let note = home.path().join("note.txt");
    std::fs::write(&note, "note\n").unwrap();
    home.ok(&["vm", "cp", note.to_str().unwrap(), "bb:/root/renamed.txt"]);
    assert_eq!(exec(&home, "cat /root/renamed.txt"), "note\n");
    home.ok(&[
        "vm",
        "cp",
        &format!("{}/.", tree.display()),
        "bb:/root/flat",
    ]);
    assert_eq!(exec(&home, "cat /root/flat/secret"), "secret\n");
    // Onto an existing file: replaced.
    home.ok(&["vm", "cp", note.to_str().unwrap(), "bb:/root/flat/secret"]);
    assert_eq!(exec(&home, "cat /root/flat/secret"), "note\n");
    let got = home.path().join("got.txt");
    home.ok(&["vm", "cp", "bb:/root/renamed.txt", got.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "note\n");

    // `-`: a tar on stdout, and one on stdin.
    let out = home
        .banger_std()
        .args(["vm", "cp", "bb:/root/tree/bin", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["bin", "bin/suid"], "{names:?}");
    let mut child = home
        .banger_std()
        .args(["vm", "cp", "-", "bb:/root/untarred"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(exec(&home, "stat -c %a /root/untarred/bin/suid"), "4755\n");

    // Errors name the path and leave nothing behind.
    let err = home.fails(&["vm", "cp", "bb:/no/such/path", back.to_str().unwrap()]);
    assert!(err.contains("/no/such/path"), "{err}");
    let err = home.fails(&["vm", "cp", tree.to_str().unwrap(), "bb:/root/renamed.txt"]);
    assert!(
        err.contains("/root/renamed.txt: cannot copy a directory onto a file"),
        "{err}"
    );
    let err = home.fails(&["vm", "cp", note.to_str().unwrap(), "bb:/nodir/x"]);
    assert!(err.contains("/nodir: no such directory"), "{err}");
    assert!(exec(&home, "ls /nodir 2>&1 || true").contains("No such file"));
    let missing = home.path().join("missing");
    let err = home.fails(&["vm", "cp", missing.to_str().unwrap(), "bb:/root"]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    let err = home.fails(&["vm", "cp", "a", "b"]);
    assert!(err.contains("VM:PATH"), "{err}");
}
