//! The guest is hostile: root in a real guest replaces banger's agent with
//! one that attacks the host (`banger-agent/examples/hostile_agent.rs`:
//! it kills the real agent and takes over its virtio-serial port), and the
//! real `banger` and `bangerd` must hold:
//!
//! - `vm cp` out of it writes nothing outside the destination: a symlink
//!   out and entries through it, a setuid file (lands without the bit), a
//!   device node and a `..` name;
//! - `workspace export` refuses an answer whose "object id" is a git
//!   option, and git writes no host file;
//! - a flood (data past the window, then connection messages nobody asked
//!   for) costs bangerd no memory to speak of (its VmHWM is printed), the
//!   agent is cut off with the reason in `vm show` and bangerd.log;
//! - an agent without flow control is refused with a clear message;
//! - a shutdown never acknowledged: `vm stop --timeout S` returns within S
//!   plus a margin; and, in the VM's second life, `vm kill` beside a stop
//!   that waits returns at once and ends that stop.
//!
//! One VM, two boots (the stop's deadline ends the first life).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, boot_home, hostile_agent_bin};

/// How much bangerd's peak memory may grow across the flood: the flood
/// is 64 MiB of data, which a daemon that buffered it would show.
const FLOOD_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// `banger ARGS`, given at most `secs` (a hostile guest must never make a
/// command hang): (exit code, stderr).
fn within(home: &TestHome, args: &[&str], secs: u64) -> (i32, String) {
    let mut child = home
        .banger_std()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("banger {args:?} did not return within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok_within(home: &TestHome, args: &[&str], secs: u64) {
    let (code, err) = within(home, args, secs);
    assert_eq!(code, 0, "banger {args:?}: {err}");
}

fn fails_within(home: &TestHome, args: &[&str], secs: u64) -> String {
    let (code, err) = within(home, args, secs);
    assert_ne!(code, 0, "banger {args:?} succeeded");
    err.trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn daemon_hwm_kib(home: &TestHome) -> u64 {
    let pid = home.json(&["daemon", "status", "--json"])["pid"]
        .as_i64()
        .unwrap();
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn console(home: &TestHome, vm: &str) -> String {
    let dir = home.json(&["vm", "show", vm, "--json"])["dir"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::read_to_string(Path::new(&dir).join("console.log")).unwrap_or_default()
}

/// Waits until the VM's console shows `mark` `n` times.
fn wait_console(home: &TestHome, vm: &str, mark: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while console(home, vm).matches(mark).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {mark:?} in the console:\n{}",
            console(home, vm)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the hostile agent in the guest (it forks away, so the exec
/// returns) and waits until it holds the port.
fn take_over(home: &TestHome, vm: &str, n: usize) {
    ok_within(home, &["vm", "exec", vm, "--", "/hostile"], 30);
    wait_console(home, vm, "hostile-agent: took over", n);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a hostile tar aims at, beside the destination: must stay as made.
fn untouched(outside: &Path) {
    let mode = std::fs::metadata(outside).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "the outside directory's mode changed");
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["keep"],
        "something was written outside the destination"
    );
}

#[test]
fn a_hostile_agent_cannot_hurt_the_daemon_or_the_hosts_files() {
    let Some(home) = boot_home() else { return };
    let Some(hostile) = hostile_agent_bin() else {
        return;
    };
    // An image with an init, so the real agent is not PID 1 and root in
    // the guest can kill it.
    let root = home.path().join("busybox");
    std::fs::create_dir_all(root.join("sbin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("sbin/init")).unwrap();
    home.ok(&[
        "image",
        "import",
        root.to_str().unwrap(),
        "--name",
        "bbinit",
    ]);
    home.ok(&["vm", "create", "bbinit", "--name", "h", "--memory", "256M"]);
    home.ok(&["vm", "start", "h"]);
    home.ok(&["vm", "cp", hostile.to_str().unwrap(), "h:/hostile"]);
    // A host repository whose HEAD the hostile export answer names.
    let repo = home.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("f"), "x").unwrap();
    git(&repo, &["add", "f"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    home.ok(&[
        "vm",
        "exec",
        "h",
        "--",
        "sh",
        "-c",
        &format!("echo {head} > /tip"),
    ]);
    take_over(&home, "h", 1);

    eprintln!("hostile: vm cp out");
    // vm cp out: nothing outside the destination changes.
    let dest = home.path().join("dest");
    let outside = home.path().join("outside");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(outside.join("keep"), "mine").unwrap();
    let d = dest.to_str().unwrap();
    // The directory replaces the link; its file lands inside.
    ok_within(&home, &["vm", "cp", "h:/symlinked", d], 30);
    assert!(
        dest.join("symlinked/a")
            .symlink_metadata()
            .unwrap()
            .is_dir()
    );
    for (src, refusal) in [
        ("h:/linkthrough", "symlink"),
        ("h:/device", "device nodes are not accepted"),
        ("h:/dotdot", "`..` is not accepted"),
    ] {
        let err = fails_within(&home, &["vm", "cp", src, d], 30);
        assert!(err.contains(refusal), "{src}: {err}");
    }
    ok_within(&home, &["vm", "cp", "h:/setuid", d], 30);
    let mode = std::fs::metadata(dest.join("setuid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "the setuid bit came through");
    untouched(&outside);

    eprintln!("hostile: workspace export");
    // workspace export: a git option as an object id is refused, and no
    // host file appears.
    let pwned = format!("/tmp/banger-hostile-{}", &head[..12]);
    let _ = std::fs::remove_file(&pwned);
    let err = fails_within(
        &home,
        &[
            "workspace",
            "export",
            "h",
            repo.to_str().unwrap(),
            "--branch",
            "from-vm",
        ],
        60,
    );
    assert!(err.contains("not a git object id"), "{err}");
    assert!(!Path::new(&pwned).exists(), "git wrote {pwned}");

    eprintln!("hostile: The flood");
    // The flood: bounded memory, cut off with the reason shown and logged.
    let before = daemon_hwm_kib(&home);
    let (code, err) = within(&home, &["vm", "exec", "h", "--", "flood"], 120);
    assert_ne!(code, 0, "the flood's exec succeeded");
    eprintln!("the flooded exec: {err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let fault = loop {
        let vm = home.json(&["vm", "show", "h", "--json"]);
        if let Some(f) = vm["agent_fault"].as_str() {
            break f.to_string();
        }
        assert!(Instant::now() < deadline, "no agent_fault in {vm}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        fault.contains("cut off") && fault.contains("flood"),
        "{fault}"
    );
    assert!(home.ok(&["vm", "show", "h"]).contains(&fault));
    let log = std::fs::read_to_string(home.data_dir().join("bangerd.log")).unwrap();
    assert!(log.contains("guest agent cut off"), "not logged:\n{log}");
    let after = daemon_hwm_kib(&home);
    eprintln!(
        "bangerd VmHWM: {before} KiB before the flood, {after} KiB after (64 MiB of data \
         past the window, then 100000 unasked messages)"
    );
    assert!(
        after < before + FLOOD_GROWTH_BOUND_KIB,
        "bangerd grew from {before} to {after} KiB"
    );

    eprintln!("hostile: The next connection");
    // The next connection: an agent without flow control is refused.
    let err = fails_within(&home, &["vm", "exec", "h", "--", "true"], 30);
    assert!(err.contains("does not do flow control"), "{err}");
    let vm = home.json(&["vm", "show", "h", "--json"]);
    assert!(
        vm["agent_fault"]
            .as_str()
            .unwrap_or_default()
            .contains("flow control"),
        "{vm}"
    );
    // The one after that speaks it, and is served.
    ok_within(&home, &["vm", "exec", "h", "--", "true"], 30);

    eprintln!("hostile: A shutdown never acknowledged");
    // A shutdown never acknowledged: the stop ends at its deadline.
    let t = Instant::now();
    ok_within(&home, &["vm", "stop", "h", "--timeout", "4"], 30);
    let took = t.elapsed();
    eprintln!("vm stop --timeout 4 against an agent that never acks: {took:?}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(4 + 3),
        "{took:?}"
    );
    assert_eq!(
        home.json(&["vm", "show", "h", "--json"])["desired_state"],
        "stopped"
    );

    eprintln!("hostile: Second life");
    // Second life: `vm kill` beside a stop that waits on the guest.
    home.ok(&["vm", "start", "h"]);
    // The first life ended in a SIGKILL, before the guest wrote back its
    // page cache: the program goes in again.
    home.ok(&["vm", "cp", hostile.to_str().unwrap(), "h:/hostile"]);
    take_over(&home, "h", 2);
    let mut stop = home
        .banger_std()
        .args(["vm", "stop", "h", "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_console(&home, "h", "hostile-agent: shutdown asked", 2);
    let t = Instant::now();
    ok_within(&home, &["vm", "kill", "h"], 30);
    let kill_took = t.elapsed();
    let status = stop.wait().unwrap();
    let stop_took = t.elapsed();
    eprintln!("vm kill beside a waiting stop: {kill_took:?}; the stop ended {stop_took:?} after");
    assert!(
        kill_took < Duration::from_secs(3),
        "vm kill waited {kill_took:?}"
    );
    assert!(
        stop_took < Duration::from_secs(10),
        "the stop waited {stop_took:?}"
    );
    assert!(status.success(), "the stop: {status}");
    assert_eq!(
        home.json(&["vm", "show", "h", "--json"])["desired_state"],
        "stopped"
    );
}
