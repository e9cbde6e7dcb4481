//! `banger system` on a host whose PID 1 is not systemd (this machine):
//! bad input is one line, `install` says what to run instead and writes
//! nothing, `status` still reports. The install itself under a real
//! systemd is banger-system's guest test.

use std::path::Path;

use banger_testkit::{TestHome, skip};

fn unit_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/etc/systemd/system")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("banger"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn without_systemd_install_names_the_foreground_helper_and_writes_nothing() {
    if Path::new("/run/systemd/system").is_dir() {
        // Here `install` would install for real, on the host running the test.
        skip("systemd is PID 1 on this host; install is tested in a guest instead");
        return;
    }
    let home = TestHome::new();
    let before = unit_files();

    let e = home.fails(&["system", "install", "--owner", "no-such-user-xyz"]);
    assert!(e.contains("no such user: no-such-user-xyz"), "{e}");
    let e = home.fails(&["system", "install", "--owner", "root"]);
    assert!(e.contains("needs no helper"), "{e}");
    let e = home.fails(&[
        "system",
        "install",
        "--owner",
        "nobody",
        "--prefix",
        "/opt/my banger",
    ]);
    assert!(e.contains("without spaces"), "{e}");

    let e = home.fails(&["system", "install", "--owner", "nobody"]);
    assert!(e.contains("systemd is not the init system"), "{e}");
    assert!(
        e.contains("banger-helper --owner 65534 --socket /run/banger-helper/helper.sock"),
        "{e}"
    );
    assert_eq!(unit_files(), before, "a refused install wrote units");

    let out = home.ok(&["system", "status"]);
    assert!(out.contains("owner:      not installed"), "{out}");
    assert!(out.contains("systemd:    not the init system"), "{out}");
    assert!(out.contains("helper:     unreachable"), "{out}");
    let st = home.json(&["system", "status", "--json"]);
    assert_eq!(st["systemd"], false, "{st}");
    assert_eq!(st["helper_socket"]["reachable"], false, "{st}");
}
