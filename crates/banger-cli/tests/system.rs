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

/// `system uninstall` with no helper running: it starts one for the job
/// (the CLI links no netlink or nftables code), which takes down the
/// bridge and banger's tables a root daemon made, inside a namespace of
/// the test's own.
#[test]
fn uninstall_takes_the_network_down_through_a_helper_it_starts() {
    if !nix::unistd::Uid::effective().is_root() {
        skip("system uninstall needs root");
        return;
    }
    let ns = banger_testkit::netns::NetNs::new("uninst");
    let config =
        "[network]\nmode = \"bridge\"\nbridge = \"bgu0\"\nbridge_cidr = \"172.30.9.1/24\"\n";
    let home = TestHome::with_config(config).in_netns(ns.name());
    // A root daemon makes the bridge and the tables at start.
    home.ok(&["vm", "ls"]);
    home.ok(&["daemon", "stop"]);
    let bridge_exists = || {
        std::process::Command::new("ip")
            .args(["-n", ns.name(), "link", "show", "bgu0"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(bridge_exists(), "no bridge made");
    let tables = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "nft", "list", "tables"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(tables().contains("inet banger"), "{}", tables());

    let out = home.ok(&["system", "uninstall", "--json"]);
    let removed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(removed["bridge"], "bgu0", "{removed}");
    assert_eq!(removed["nft_table"], true, "{removed}");
    assert!(!bridge_exists(), "bridge left");
    assert!(!tables().contains("banger"), "tables left: {}", tables());
    // Nothing of the transient helper is left running.
    assert!(
        banger_testkit::procs::mentioning("banger-uninstall-").is_empty(),
        "the helper started for uninstall outlived it"
    );
}
