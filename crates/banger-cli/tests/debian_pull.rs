//! A real distribution through a real registry: the mmdebstrap Debian
//! bookworm tarball published with `skopeo copy tarball:` (one gzipped
//! layer, empty config), pulled by `banger image pull` and booted with its
//! own systemd as PID 1. Its own test binary so that its one TCG boot does
//! not share the CPU with the other Debian tests.

use std::process::Stdio;

use banger_testkit::registry::Registry;
use banger_testkit::{TestHome, agent_bin, debian_rootfs_tar, kernel_deb, require_tool};

#[test]
fn debian_pulled_from_a_registry_boots_with_its_owners_intact() {
    let Some(deb) = kernel_deb() else { return };
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    let Some(_) = agent_bin() else { return };
    require_tool("qemu-system-x86_64", "qemu-system-x86");

    let registry = Registry::start();
    let digest = registry.push_rootfs_tarball(&tar, "library/debian:bookworm");
    // What makes this pull differ from the hand-built layouts of pull.rs:
    // skopeo's own manifest, with the layer compressed by skopeo.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.blob_data(&digest)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    let home = TestHome::new();
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    let reference = format!("{}/library/debian:bookworm", registry.addr);
    assert_eq!(
        home.ok(&["image", "pull", &reference]).trim(),
        "debian:bookworm"
    );
    let img = home.json(&["image", "show", "debian:bookworm", "--json"]);
    assert_eq!(img["source"]["kind"], "registry");
    assert_eq!(img["source"]["digest"], digest.as_str());
    assert_eq!(img["has_init"], true, "systemd-sysv provides /sbin/init");
    assert_eq!(img["config"]["entrypoint"], serde_json::json!([]));
    assert_eq!(img["config"]["env"], serde_json::json!([]));

    // One boot for every guest-side check. The default memory (1 GiB), as
    // boot.rs's Debian boot: systemd needs more than the busybox 256M.
    // Owners and modes come from the layer's tar headers through the
    // rootless unpack: shadow's group, setuid passwd, setgid ssh-agent.
    let script = "cat /etc/os-release; readlink /proc/1/exe; \
                  stat -c '%n %U:%G %a' /etc/shadow /usr/bin/passwd /usr/bin/ssh-agent; \
                  exit 7";
    let out = home
        .banger_std()
        .args(["vm", "run", "debian:bookworm", "--rm", "--"])
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's exit code comes back\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("VERSION_CODENAME=bookworm\n"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.ends_with("/systemd")),
        "PID 1 is the image's systemd: {stdout}"
    );
    for line in [
        "/etc/shadow root:shadow 640",
        "/usr/bin/passwd root:root 4755",
        "/usr/bin/ssh-agent root:_ssh 2755",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in: {stdout}");
    }
    assert_eq!(
        home.json(&["vm", "ls", "--json"]),
        serde_json::json!([]),
        "--rm removed the VM"
    );
}
