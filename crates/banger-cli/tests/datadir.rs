//! One data dir, one daemon, and only the user's own: the CLI and bangerd
//! against the real filesystem, no VM booted.
//!
//! - two runtime dirs (a cron job's and a login's `XDG_RUNTIME_DIR`) and a
//!   symlinked spelling of the data dir all reach the one daemon, and a
//!   second `bangerd` is refused in one line naming the first;
//! - a data dir in a directory others can write (`/tmp`-like, sticky or
//!   not), writable by others itself, or with a subdirectory of another
//!   user, is refused in one line;
//! - links planted in `tmp/`, `vms/`, `images/` and `kernels/` survive the
//!   daemon's start-up cleanup and their targets are untouched; an orphan
//!   directory holding a link is removed without following it;
//! - `bangerd.log` rotates at `[logs] max_mib`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use banger_testkit::TestHome;

fn status(
    home: &TestHome,
    runtime: Option<&Path>,
    banger_home: Option<&Path>,
) -> serde_json::Value {
    let mut cmd = home.banger();
    if let Some(r) = runtime {
        cmd.env("XDG_RUNTIME_DIR", r);
    }
    if let Some(h) = banger_home {
        cmd.env("BANGER_HOME", h);
    }
    // `vm ls` starts the daemon when none answers; `daemon status` then
    // says which one answered.
    let out = cmd.args(["vm", "ls"]).output().unwrap();
    assert!(
        out.status.success(),
        "vm ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = home.banger();
    if let Some(r) = runtime {
        cmd.env("XDG_RUNTIME_DIR", r);
    }
    if let Some(h) = banger_home {
        cmd.env("BANGER_HOME", h);
    }
    let out = cmd.args(["daemon", "status", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_runtime_dirs_and_a_symlinked_path_reach_one_daemon() {
    let home = TestHome::new();
    let (a, b) = (home.path().join("xdg-a"), home.path().join("xdg-b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let first = status(&home, Some(&a), None);
    let pid = first["pid"].as_i64().unwrap();
    assert!(
        first["socket"]
            .as_str()
            .unwrap()
            .starts_with(a.to_str().unwrap())
    );
    // Another runtime dir: the lock in the data dir says where the daemon is.
    let second = status(&home, Some(&b), None);
    assert_eq!(second["pid"].as_i64(), Some(pid), "{second}");
    // A symlinked spelling of the data dir, from a third runtime dir.
    std::fs::create_dir(home.path().join("links")).unwrap();
    let link = home.path().join("links/data");
    std::os::unix::fs::symlink(home.data_dir(), &link).unwrap();
    let third = status(&home, None, Some(&link));
    assert_eq!(third["pid"].as_i64(), Some(pid), "{third}");
    // A second daemon started by hand is refused, naming the first.
    let bin = banger_testkit::bin_dir().join("bangerd");
    let out = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BANGER_HOME", &link)
        .env("BANGER_CONFIG", home.path().join("config.toml"))
        .env("XDG_RUNTIME_DIR", &b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(!out.status.success());
    assert!(
        last.contains(&format!("another bangerd (pid {pid} on "))
            && last.contains(&home.data_dir().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_data_dir_others_can_reach_is_refused() {
    let home = TestHome::new();
    // In a world-writable directory, sticky (as /tmp) or not.
    let shared = home.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for mode in [0o1777, 0o777] {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = home.fails_with_env(&["vm", "ls"], "BANGER_HOME", shared.join("data"));
        assert!(err.contains("which other users can write"), "{err}");
    }
    // Writable by others itself.
    let data = home.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = home.fails(&["vm", "ls"]);
    assert!(err.contains("is writable by other users"), "{err}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A subdirectory of another user.
    let vms = data.join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    rustix::fs::chown(&vms, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
    let err = home.fails(&["vm", "ls"]);
    assert!(err.contains("is owned by uid 65534"), "{err}");
    std::fs::remove_dir(&vms).unwrap();
    // Once it is the user's own, it serves.
    home.ok(&["vm", "ls"]);
}

#[test]
fn cleanup_never_follows_links() {
    let home = TestHome::new();
    home.ok(&["vm", "ls"]);
    home.ok(&["daemon", "stop"]);
    // What another user would aim the cleanup at.
    let target = home.path().join("precious");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    let data = home.data_dir();
    let planted: Vec<_> = ["tmp", "vms", "images", "kernels"]
        .iter()
        .map(|d| data.join(d).join("planted"))
        .collect();
    for link in &planted {
        std::os::unix::fs::symlink(&target, link).unwrap();
    }
    // An orphan directory (no record names it) holding a link.
    let orphan = data.join("vms/0123456789abcdef");
    std::fs::create_dir(&orphan).unwrap();
    std::os::unix::fs::symlink(&target, orphan.join("inner")).unwrap();
    home.ok(&["vm", "ls"]);
    for link in &planted {
        assert!(
            link.symlink_metadata().is_ok_and(|m| m.is_symlink()),
            "{} was removed",
            link.display()
        );
    }
    assert!(!orphan.exists(), "the orphan directory stayed");
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep.txt"]);
    assert_eq!(
        std::fs::read_to_string(target.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn the_daemon_log_rotates_at_its_bound() {
    let home = TestHome::with_config("[logs]\nmax_mib = 1\n");
    // A log already past the bound, as months of a busy daemon leave it.
    std::fs::create_dir_all(home.data_dir()).unwrap();
    std::fs::set_permissions(home.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = home.data_dir().join("bangerd.log");
    std::fs::write(&log, vec![b'x'; 3 << 20]).unwrap();
    home.ok(&["vm", "ls"]);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let old = home.data_dir().join("bangerd.log.1");
    assert_eq!(size(&old), 3 << 20, "the full log became bangerd.log.1");
    assert!(size(&log) < 1 << 20);
    // The running daemon writes to the fresh file, descriptors included.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("bangerd listening"), "{text}");
}
