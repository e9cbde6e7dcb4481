//! The real artifacts: Debian's cloud kernel package and a Debian bookworm
//! root filesystem made by mmdebstrap, through the real CLI and daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use banger_testkit::{TestHome, debian_rootfs_tar, kernel_deb, require_tool};

#[test]
fn debian_kernel_package_imports_with_modules() {
    let Some(deb) = kernel_deb() else { return };
    let home = TestHome::new();
    let name = home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    let k = home.json(&["kernel", "show", name.trim(), "--json"]);
    let release = k["release"].as_str().unwrap();
    assert!(release.ends_with("-cloud-amd64"), "{release}");
    assert_eq!(k["is_default"], true);
    let modules = Path::new(k["modules_path"].as_str().unwrap());
    assert!(modules.ends_with(release));
    assert!(modules.join("modules.dep").exists());
    assert!(modules.join("kernel/fs/overlayfs").exists());
    home.fails(&[
        "kernel",
        "import",
        "--deb",
        "--initrd",
        "/x",
        deb.to_str().unwrap(),
    ]);
}

#[test]
fn debian_rootfs_imports_and_vm_disks_are_root_owned() {
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    require_tool("debugfs", "e2fsprogs");
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    banger_testkit::fake_bzimage(&k, "6.1.0-test");
    home.ok(&["kernel", "import", k.to_str().unwrap()]);
    home.ok(&[
        "image",
        "import",
        tar.to_str().unwrap(),
        "--name",
        "debian-bookworm",
    ]);
    let img = home.json(&["image", "show", "debian-bookworm", "--json"]);
    assert_eq!(img["has_init"], true, "systemd-sysv provides /sbin/init");
    let base = Path::new(img["base_path"].as_str().unwrap());
    let os =
        String::from_utf8(banger_disk::read_file(base, "/usr/lib/os-release").unwrap()).unwrap();
    assert!(os.contains("bookworm"), "{os}");
    let sudo_like = banger_disk::stat(base, "/usr/bin/passwd").unwrap();
    assert_eq!(
        sudo_like.perm & 0o4000,
        0o4000,
        "setuid bits survive the import"
    );
    let shadow = banger_disk::stat(base, "/etc/shadow").unwrap();
    assert_eq!((shadow.uid, shadow.perm), (0, 0o640));
    assert_ne!(shadow.gid, 0, "group shadow keeps its gid");
    let null = banger_disk::stat(base, "/usr/bin/ssh-agent").unwrap();
    assert_ne!(null.gid, 0, "setgid ssh-agent keeps group _ssh");
    banger_disk::fsck_check(base).unwrap();

    let vm = home.json(&[
        "vm",
        "create",
        "debian-bookworm",
        "--name",
        "deb1",
        "--json",
    ]);
    let overlay = Path::new(vm["overlay_disk"].as_str().unwrap());
    let work = Path::new(vm["work_disk"].as_str().unwrap());
    for f in [
        "/upper/etc/hostname",
        "/upper/etc/hosts",
        "/upper/etc/resolv.conf",
        "/upper/etc/ssh/sshd_config.d/99-banger.conf",
    ] {
        let st = banger_disk::stat(overlay, f).unwrap();
        assert_eq!((st.uid, st.gid), (0, 0), "{f}");
    }
    assert_eq!(
        banger_disk::read_file(overlay, "/upper/etc/hostname").unwrap(),
        b"deb1\n"
    );
    for f in ["/.bashrc", "/.profile"] {
        let st = banger_disk::stat(work, f).unwrap();
        assert_eq!((st.uid, st.gid), (0, 0), "work disk {f} owned by root");
    }
    let root = banger_disk::stat(work, "/").unwrap();
    assert_eq!((root.uid, root.gid, root.perm), (0, 0, 0o700));
}

#[test]
fn daemon_killed_mid_import_leaves_nothing() {
    let Some(tar) = debian_rootfs_tar() else {
        return;
    };
    let home = TestHome::new();
    home.ok(&["vm", "ls"]);
    let pid: i32 = home.json(&["daemon", "status", "--json"])["pid"]
        .as_i64()
        .unwrap()
        .try_into()
        .unwrap();
    let mut import = home
        .banger_std()
        .args([
            "image",
            "import",
            tar.to_str().unwrap(),
            "--name",
            "interrupted",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the daemon reports the unpack under way (stage lines go to
    // a non-TTY stderr), then kill the daemon the hard way.
    let mut stderr = std::io::BufReader::new(import.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "import ended early: {seen}"
        );
        seen.push_str(&line);
        if line.starts_with("unpack:") {
            break;
        }
    }
    // The tree is being unpacked in memory (this machine's /dev/shm holds it).
    let staged = || -> Vec<std::path::PathBuf> {
        let prefix = banger_image::memory_staging_prefix(&home.data_dir().join("images"));
        std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    // Its staging dir appears as the unpack starts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while staged().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_memory = !staged().is_empty();
    for dir in staged() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} must be private", dir.display());
    }
    assert!(
        std::fs::read_dir(home.data_dir().join("images"))
            .unwrap()
            .next()
            .is_some(),
        "the import should be under way"
    );
    banger_testkit::kill9(pid.into());
    let status = import.wait().unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    assert!(
        !status.success(),
        "the CLI reports the daemon's death: {seen}"
    );
    assert!(
        seen.lines().last().unwrap_or("").starts_with("banger: "),
        "{seen}"
    );

    // The next command restarts the daemon, which clears the half import.
    assert_eq!(home.json(&["image", "ls", "--json"]), serde_json::json!([]));
    let left: Vec<String> = home
        .data_files()
        .into_iter()
        .filter(|f| f.starts_with("images/") || f.starts_with("tmp/"))
        .collect();
    assert!(left.is_empty(), "leftovers after restart: {left:?}");
    assert!(staged().is_empty(), "memory staging left: {:?}", staged());
    eprintln!("the killed import was staged in memory: {in_memory}");
    // And the name is usable.
    home.ok(&[
        "image",
        "import",
        tar.to_str().unwrap(),
        "--name",
        "interrupted",
    ]);
}
