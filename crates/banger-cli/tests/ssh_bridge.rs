//! `vm ssh` over the bridge, under QEMU with the Debian image (systemd +
//! sshd), entirely inside network namespaces this test creates: the
//! daemon and the CLI live in namespace `host` (joined by a veth to an
//! empty `inet`, so the NAT has an uplink that leads nowhere real). With
//! host networking on, `vm ssh` reaches the guest IP straight over the
//! bridge, checked against the pinned key; `--via-agent` still goes
//! through the agent. The guest's `$SSH_CONNECTION` tells which way each
//! session came: from the bridge's address, or from the guest's loopback.

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with, debian_rootfs_tar, require_tool};

fn run(home: &TestHome, args: &[&str]) -> (i32, String, String) {
    home.outcome(args)
}

#[test]
fn ssh_over_the_bridge_with_the_pinned_key_and_via_agent() {
    require_tool("ssh", "openssh-client");
    let host = NetNs::new("sshbr");
    let inet = NetNs::new("sshup");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.201.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.201.0.2/24", "dev", "eth0"]);
    host.ip(&["route", "add", "default", "via", "10.201.0.2"]);
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.31.9.1/24\"\n\
                  dns_upstreams = [\"10.201.0.2:53\"]\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    home.ok(&["image", "import", tar.to_str().unwrap(), "--name", "debian"]);
    home.ok(&["vm", "create", "debian", "--name", "deb"]);
    home.ok(&["vm", "start", "deb"]);
    // Right after the start, while systemd is still bringing sshd up: `vm
    // ssh` waits for it (and says so) instead of failing on a refusal. The
    // words after `--` reach the guest as that argv.
    let (code, out, err) = run(
        &home,
        &[
            "vm",
            "ssh",
            "deb",
            "--",
            "sh",
            "-c",
            "echo $SSH_CONNECTION; exit 5",
        ],
    );
    assert_eq!(code, 5, "{out} {err}");
    assert!(
        out.starts_with("172.31.9.1 "),
        "over the bridge, from the bridge address: {out:?} {err}"
    );
    let (code, out, err) = run(
        &home,
        &[
            "vm",
            "ssh",
            "--via-agent",
            "deb",
            "--",
            "sh",
            "-c",
            "echo $SSH_CONNECTION",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("127.0.0.1 "),
        "through the agent, from the guest's loopback: {out:?}"
    );

    // The bridge way checks the same pinned key: a changed one is refused.
    let kh_path = home.data_dir().join("ssh/known_hosts");
    let original = std::fs::read_to_string(&kh_path).unwrap();
    let swapped: String = original
        .lines()
        .map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            if w.len() >= 3 {
                // Same type, a different (well-formed) ed25519 key.
                w[2] = "AAAAC3NzaC1lZDI1NTE5AAAAIBzp3TtzL0yoMJL6vJUSbT7DLYqFQ0hqhOzVnqkIyLfz";
            }
            w.join(" ") + "\n"
        })
        .collect();
    std::fs::write(&kh_path, swapped).unwrap();
    let (code, out, err) = run(&home, &["vm", "ssh", "deb", "--", "echo should-not-run"]);
    assert_eq!(code, 255, "{out} {err}");
    assert!(!out.contains("should-not-run"));
    std::fs::write(&kh_path, original).unwrap();
    home.ok(&["vm", "rm", "--force", "deb"]);
}
