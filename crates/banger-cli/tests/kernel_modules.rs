//! The kernel's whole module tree inside a guest: Debian's cloud kernel
//! and the Debian image, booted under QEMU, load modules the initramfs
//! does not carry.

use std::path::Path;
use std::process::{Command, Stdio};

use banger_testkit::{boot_home, debian_rootfs_tar, require_tool};

#[test]
fn modprobe_finds_every_module_of_the_kernel() {
    let Some(home) = boot_home() else { return };
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    require_tool("depmod", "kmod");
    let kmod = require_tool("kmod", "kmod");
    let k = home.json(&["kernel", "ls", "--json"])[0].clone();
    let disk = Path::new(k["modules_disk"].as_str().expect("a modules disk"));
    banger_disk::fsck_check(disk).unwrap();
    let root = banger_disk::list_dir(disk, "/").unwrap();
    assert!(
        root.iter().any(|e| e.name == "modules.dep.bin"),
        "kmod's binary index is on the disk"
    );

    // mmdebstrap's minbase has libkmod (systemd needs it) but not the kmod
    // tool; add the host's (bookworm, like the image) as its package would.
    let image_tar = home.path().join("debian-kmod.tar");
    std::fs::copy(&tar, &image_tar).unwrap();
    let extra = home.path().join("kmod-root");
    std::fs::create_dir_all(extra.join("usr/bin")).unwrap();
    std::fs::create_dir_all(extra.join("usr/sbin")).unwrap();
    std::fs::copy(&kmod, extra.join("usr/bin/kmod")).unwrap();
    std::os::unix::fs::symlink("../bin/kmod", extra.join("usr/sbin/modprobe")).unwrap();
    std::os::unix::fs::symlink("kmod", extra.join("usr/bin/lsmod")).unwrap();
    let status = Command::new("tar")
        .arg("rf")
        .arg(&image_tar)
        .arg("-C")
        .arg(&extra)
        .args(["./usr/bin/kmod", "./usr/sbin/modprobe", "./usr/bin/lsmod"])
        .status()
        .unwrap();
    assert!(status.success());
    home.ok(&[
        "image",
        "import",
        image_tar.to_str().unwrap(),
        "--name",
        "debian",
    ]);

    let out = home
        .banger_std()
        .args([
            "vm",
            "run",
            "debian",
            "--rm",
            "--",
            "sh",
            "-c",
            "modprobe -a br_netfilter veth && lsmod && \
             (touch /lib/modules/$(uname -r)/x 2>/dev/null && echo WRITABLE || echo read-only)",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let loaded: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // bridge comes in as br_netfilter's dependency.
    for m in ["br_netfilter", "bridge", "veth"] {
        assert!(loaded.contains(&m), "{m} not in lsmod:\n{stdout}");
    }
    assert!(stdout.trim_end().ends_with("read-only"), "{stdout}");
}
