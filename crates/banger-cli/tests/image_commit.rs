//! `image commit` and `vm rebase` on real QEMU boots of a busybox image.
//!
//! Commit: files installed in a running VM (an executable with an unusual
//! mode, a note in /root) are in a VM run from the committed image, with
//! their modes; what belongs to the running system or to that one VM
//! (/tmp, /run, /proc contents, its hostname) is not; bad input is one
//! error line and leaves the data dir as it was.
//!
//! Rebase: a VM moved from image A to image B keeps /root, its id,
//! address and host key, and sees B's /etc; the overlay's changes are gone;
//! a running VM and a missing image are refused.

use std::path::Path;

use banger_testkit::{TestHome, boot_home, busybox_rootfs};

fn image(home: &TestHome, name: &str) -> serde_json::Value {
    home.json(&["image", "show", name, "--json"])
}

#[test]
fn commit_keeps_installed_files_and_root_as_the_work_seed() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "src", "--cpus", "1", "--memory", "256M",
    ]);
    let before = home.data_files();
    let err = home.fails(&["image", "commit", "src", "snap"]);
    assert!(err.contains("not running"), "{err}");
    assert_eq!(home.data_files(), before, "a refused commit left files");

    home.ok(&["vm", "start", "src"]);
    home.ok(&[
        "vm",
        "exec",
        "src",
        "--",
        "sh",
        "-c",
        "mkdir -p /usr/local/bin \
         && echo '#!/bin/sh' > /usr/local/bin/hello \
         && echo 'echo hello from the commit' >> /usr/local/bin/hello \
         && busybox chmod 751 /usr/local/bin/hello \
         && echo kept > /root/note \
         && echo scratch > /tmp/gone \
         && echo runtime > /run/gone",
    ]);

    // Bad input: one line each, nothing made.
    let before = home.data_files();
    let images = home.json(&["image", "ls", "--json"]);
    let err = home.fails(&["image", "commit", "src", "busybox"]);
    assert!(err.contains("exists already"), "{err}");
    let err = home.fails(&["image", "commit", "nope", "snap"]);
    assert!(err.contains("nope"), "{err}");
    let err = home.fails(&["image", "commit", "src", "bad name"]);
    assert!(err.contains("image name"), "{err}");
    assert_eq!(home.data_files(), before, "a refused commit left files");
    assert_eq!(home.json(&["image", "ls", "--json"]), images);

    home.ok(&["image", "commit", "src", "snap"]);
    home.ok(&["vm", "stop", "src", "--timeout", "30"]);
    let snap = image(&home, "snap");
    let src = home.json(&["vm", "show", "src", "--json"]);
    let parent = image(&home, "busybox");
    assert_eq!(snap["source"]["kind"], "commit");
    assert_eq!(snap["source"]["vm_id"], src["id"]);
    assert_eq!(snap["source"]["parent_image_id"], parent["id"]);
    assert_eq!(snap["has_init"], parent["has_init"]);
    let show = home.ok(&["image", "show", "snap"]);
    assert!(show.contains("commit of vm src (on busybox)"), "{show}");

    // The base, read without booting: runtime directories are empty and
    // the per-VM files banger staged are not there (the busybox image has
    // none of its own). /root is in the base as in any import (the work
    // disk is mounted over it).
    let base = Path::new(snap["base_path"].as_str().unwrap());
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp"] {
        let entries = banger_disk::list_dir(base, dir).unwrap();
        assert!(entries.is_empty(), "{dir} in the base: {entries:?}");
    }
    for absent in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/ssh/ssh_host_ed25519_key",
    ] {
        assert!(
            banger_disk::stat(base, absent).is_err(),
            "{absent} was committed"
        );
    }
    assert_eq!(
        banger_disk::stat(base, "/usr/local/bin/hello")
            .unwrap()
            .perm,
        0o751
    );
    let seed = Path::new(snap["work_seed_path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(seed.join("note")).unwrap(),
        "kept\n"
    );
    assert!(
        !seed.join(".ssh/authorized_keys").exists(),
        "the managed key went into the seed"
    );

    let out = home.ok(&[
        "vm",
        "run",
        "snap",
        "--name",
        "fromsnap",
        "--rm",
        "--cpus",
        "1",
        "--memory",
        "256M",
        "--",
        "sh",
        "-c",
        "/usr/local/bin/hello; stat -c %a /usr/local/bin/hello; cat /root/note; cat /etc/hostname; \
         ls -A /tmp /run | busybox grep -c gone || true",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello from the commit", "751", "kept", "fromsnap", "0"],
        "{out}"
    );
}

/// A busybox image whose /etc says it is image B.
fn import_b(home: &TestHome) {
    let root = home.path().join("busybox-b");
    busybox_rootfs(&root);
    std::fs::write(
        root.join("etc/os-release"),
        "ID=busybox-b\nPRETTY_NAME=\"image B\"\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/motd"), "welcome to B\n").unwrap();
    home.ok(&[
        "image",
        "import",
        root.to_str().unwrap(),
        "--name",
        "busybox-b",
    ]);
}

#[test]
fn rebase_keeps_root_and_identity_and_takes_the_new_etc() {
    let Some(home) = boot_home() else { return };
    import_b(&home);
    home.ok(&[
        "vm", "create", "busybox", "--name", "rb", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "rb"]);
    home.ok(&[
        "vm",
        "exec",
        "rb",
        "--",
        "sh",
        "-c",
        "echo keep > /root/keep && echo on-a > /etc/only-on-a",
    ]);
    let key = home.ok(&[
        "vm",
        "exec",
        "rb",
        "--",
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);

    let err = home.fails(&["vm", "rebase", "rb", "busybox-b"]);
    assert!(err.contains("is running"), "{err}");
    home.ok(&["vm", "stop", "rb", "--timeout", "30"]);
    let before = home.data_files();
    let err = home.fails(&["vm", "rebase", "rb", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = home.fails(&["vm", "rebase", "nope", "busybox-b"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(home.data_files(), before, "a refused rebase left files");

    let old = home.json(&["vm", "show", "rb", "--json"]);
    home.ok(&["vm", "rebase", "rb", "busybox-b"]);
    let new = home.json(&["vm", "show", "rb", "--json"]);
    assert_eq!(new["image_id"], image(&home, "busybox-b")["id"]);
    for same in ["id", "name", "guest_ip", "vsock_cid", "work_disk", "spec"] {
        assert_eq!(new[same], old[same], "{same} changed");
    }
    assert_eq!(home.data_files(), before, "a rebase left files behind");

    home.ok(&["vm", "start", "rb"]);
    let out = home.ok(&[
        "vm",
        "exec",
        "rb",
        "--",
        "sh",
        "-c",
        "cat /root/keep /etc/motd; busybox grep ^ID= /etc/os-release; \
         hostname; test -e /etc/only-on-a && echo overlay-kept || echo overlay-fresh",
    ]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "keep",
            "welcome to B",
            "ID=busybox-b",
            "rb",
            "overlay-fresh"
        ],
        "{out}"
    );
    let key_after = home.ok(&[
        "vm",
        "exec",
        "rb",
        "--",
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);
    assert_eq!(key_after, key, "the host key changed");
    home.ok(&["vm", "stop", "rb", "--timeout", "30"]);
    // Image A is no longer used by the VM: it can go.
    home.ok(&["image", "rm", "busybox"]);
}
