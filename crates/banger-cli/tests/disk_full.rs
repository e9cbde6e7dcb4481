//! A full data directory: kernel import, image import, image pull, vm
//! create, vm start and vm snapshot each fail with one line, `no space
//! left on <dir>`,
//! the `no_space` code and HTTP 507; nothing half-made stays (no record, no
//! file in the data dir, nothing in `tmp/`); the daemon keeps serving; and
//! once space is freed the same command succeeds.
//!
//! The data dir is a small tmpfs the test mounts (root only). The kernel
//! import meets a 40 MiB filesystem it does not fit in, then the filesystem
//! grows; the other operations meet one filled to the last byte by a
//! ballast file, then the ballast goes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_testkit::registry::{Registry, single_image_layout};
use banger_testkit::{TestHome, agent_bin, busybox_rootfs, kernel_deb, require_tool, skip};
use serde_json::json;

/// A tmpfs mounted on the home's data dir; on drop (even after a failed
/// assertion) the home's VMs are killed, its daemon stopped and the
/// filesystem unmounted.
struct Tmpfs<'a> {
    home: &'a TestHome,
    dir: PathBuf,
}

impl<'a> Tmpfs<'a> {
    fn mount(home: &'a TestHome, size: &str) -> Tmpfs<'a> {
        let dir = home.data_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Tmpfs { home, dir }
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {} with size={size}", self.dir.display());
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        if let Ok(out) = self.home.banger_std().args(["vm", "ls", "--json"]).output() {
            let vms: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            for vm in vms.as_array().into_iter().flatten() {
                if let Some(id) = vm["id"].as_str() {
                    let _ = self.home.banger_std().args(["vm", "kill", id]).output();
                }
            }
        }
        let _ = self.home.banger_std().args(["daemon", "stop"]).output();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a daemon that would not stop): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A file that takes every free byte of the filesystem holding `dir`.
struct Ballast(PathBuf);

impl Ballast {
    fn fill(dir: &Path) -> Ballast {
        let path = dir.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xA5u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk, byte-sized writes until nothing fits.
        let small = [0xA5u8; 512];
        while f.write_all(&small).is_ok() {}
        while f.write_all(&small[..1]).is_ok() {}
        Ballast(path)
    }
}

impl Ballast {
    /// Takes every free byte but `room`: an operation gets started and
    /// runs out part way.
    fn leaving(dir: &Path, room: u64) -> Ballast {
        let b = Ballast::fill(dir);
        let f = std::fs::OpenOptions::new().write(true).open(&b.0).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(room)).unwrap();
        b
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A verified blob of the pull cache: a pull that fails later keeps the
/// layers it finished (the retry reuses them; `image prune` frees them),
/// never a partial download.
/// `vm create` of a small VM `v1` of the `bb` image, for the full-disk cases.
const SMALL_VM: [&str; 11] = [
    "vm",
    "create",
    "bb",
    "--name",
    "v1",
    "--memory",
    "256M",
    "--work-disk-size",
    "64M",
    "--overlay-disk-size",
    "64M",
];

fn is_whole_blob(data_dir: &Path, rel: &str) -> bool {
    let Some(hex) = rel.strip_prefix("blobs/sha256/") else {
        return false;
    };
    let bytes = std::fs::read(data_dir.join(rel)).unwrap_or_default();
    banger_testkit::registry::sha256(&bytes).ends_with(hex)
}

/// The CLI fails with one `no space left on <data dir>/...` line, the API
/// answers 507 with `no_space`, and the data dir is as it was.
fn fails_for_space(
    home: &TestHome,
    args: &[&str],
    api: (&str, &str, Option<serde_json::Value>),
) -> String {
    let before = home.data_files();
    let err = home.fails(args);
    let prefix = format!("banger: no space left on {}", home.data_dir().display());
    assert!(err.starts_with(&prefix), "banger {args:?}: {err}");
    let (status, body) = home.api(api.0, api.1, api.2.as_ref());
    assert_eq!(status, 507, "{api:?}: {body}");
    assert_eq!(body["error"]["code"], "no_space", "{api:?}: {body}");
    let left: Vec<String> = home
        .data_files()
        .into_iter()
        .filter(|f| !before.contains(f) && !is_whole_blob(&home.data_dir(), f))
        .collect();
    assert!(left.is_empty(), "banger {args:?} left {left:?} behind");
    let tmp: Vec<_> = std::fs::read_dir(home.data_dir().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "banger {args:?} left {tmp:?} in tmp/");
    eprintln!("banger {}: {err}", args[..2].join(" "));
    err
}

#[test]
fn a_full_data_dir_fails_cleanly_and_recovers() {
    if !nix_is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let Some(deb) = kernel_deb() else { return };
    agent_bin();
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let deb = deb.to_str().unwrap().to_string();

    let home = TestHome::new();
    let fs = Tmpfs::mount(&home, "40m");
    home.ok(&["kernel", "ls"]);

    // Kernel import: the package's modules do not fit in 40 MiB.
    let import = ["kernel", "import", "--deb", &deb];
    fails_for_space(
        &home,
        &import,
        (
            "POST",
            "/v1/kernels",
            Some(json!({"path": deb, "deb": true})),
        ),
    );
    assert_eq!(home.json(&["kernel", "ls", "--json"]), json!([]));
    let kernels: Vec<_> = std::fs::read_dir(home.data_dir().join("kernels"))
        .unwrap()
        .collect();
    assert!(kernels.is_empty(), "staging left behind: {kernels:?}");
    fs.resize("256m");
    home.ok(&import);

    // Image import from a directory.
    let src = tempfile::tempdir().unwrap();
    busybox_rootfs(src.path());
    let src_path = src.path().to_str().unwrap();
    let image_import = ["image", "import", src_path, "--name", "bb"];
    {
        let _full = Ballast::fill(&home.data_dir());
        fails_for_space(
            &home,
            &image_import,
            (
                "POST",
                "/v1/images",
                Some(json!({"path": src_path, "name": "bb"})),
            ),
        );
        assert_eq!(home.json(&["image", "ls", "--json"]), json!([]));
    }
    home.ok(&image_import);

    // Image pull from a registry on loopback.
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    single_image_layout(
        layout.path(),
        "1",
        &banger_testkit::registry::minimal_busybox_image(),
    );
    registry.push(layout.path(), "1", "tools/bb:1", None, false);
    let reference = format!("{}/tools/bb:1", registry.addr);
    let pull = ["image", "pull", &reference, "--name", "pulled"];
    {
        let _full = Ballast::fill(&home.data_dir());
        fails_for_space(
            &home,
            &pull,
            (
                "POST",
                "/v1/images/pull",
                Some(json!({"reference": reference, "name": "pulled"})),
            ),
        );
        assert_eq!(
            home.json(&["image", "ls", "--json"])
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    home.ok(&pull);

    // VM create.
    let create = SMALL_VM;
    {
        let _full = Ballast::fill(&home.data_dir());
        fails_for_space(
            &home,
            &create,
            (
                "POST",
                "/v1/vms",
                Some(
                    json!({"image": "bb", "name": "v1", "work_disk_size": "64M", "overlay_disk_size": "64M"}),
                ),
            ),
        );
        assert_eq!(home.json(&["vm", "ls", "--json"]), json!([]));
    }
    home.ok(&create);

    // VM start: its first boot builds the kernel's initramfs.
    {
        let _full = Ballast::fill(&home.data_dir());
        fails_for_space(
            &home,
            &["vm", "start", "v1"],
            ("POST", "/v1/vms/v1/start", None),
        );
        let vm = home.json(&["vm", "show", "v1", "--json"]);
        assert_eq!(vm["desired_state"], "stopped", "{vm}");
    }
    home.ok(&["vm", "start", "v1"]);
    assert_eq!(
        home.json(&["vm", "show", "v1", "--json"])["desired_state"],
        "running"
    );
    home.ok(&["vm", "kill", "v1"]);
}

/// Bad input and a full disk are told apart: on the same full filesystem a
/// corrupt kernel file, a junk package and a truncated package are the
/// user's fault (`invalid_argument`, 400), the real package that does not
/// fit is `no_space` (507), and none of them leaves anything behind.
#[test]
fn a_corrupt_kernel_and_a_full_disk_get_different_codes() {
    if !nix_is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let Some(deb) = kernel_deb() else { return };
    let home = TestHome::new();
    let _fs = Tmpfs::mount(&home, "40m");
    home.ok(&["kernel", "ls"]);
    let inputs = tempfile::tempdir().unwrap();
    let junk_kernel = inputs.path().join("vmlinuz-junk");
    std::fs::write(&junk_kernel, vec![0x5au8; 64 << 10]).unwrap();
    let junk_deb = inputs.path().join("junk.deb");
    std::fs::write(&junk_deb, b"!<arch>\nthis is not a package").unwrap();
    let whole = std::fs::read(&deb).unwrap();
    let truncated_deb = inputs.path().join("truncated.deb");
    std::fs::write(&truncated_deb, &whole[..whole.len() / 2]).unwrap();
    let before = home.data_files();
    for (path, is_deb) in [
        (&junk_kernel, false),
        (&junk_deb, true),
        (&truncated_deb, true),
    ] {
        let path = path.to_str().unwrap();
        let body = json!({"path": path, "deb": is_deb});
        let (status, reply) = home.api("POST", "/v1/kernels", Some(&body));
        assert_eq!(status, 400, "{path}: {reply}");
        assert_eq!(
            reply["error"]["code"], "invalid_argument",
            "{path}: {reply}"
        );
        let mut args = vec!["kernel", "import", path];
        if is_deb {
            args = vec!["kernel", "import", "--deb", path];
        }
        let err = home.fails(&args);
        assert!(!err.contains("no space"), "{path}: {err}");
        eprintln!("{path}: {err}");
    }
    let deb = deb.to_str().unwrap();
    let (status, reply) = home.api(
        "POST",
        "/v1/kernels",
        Some(&json!({"path": deb, "deb": true})),
    );
    assert_eq!(status, 507, "{reply}");
    assert_eq!(reply["error"]["code"], "no_space", "{reply}");
    assert_eq!(home.json(&["kernel", "ls", "--json"]), json!([]));
    assert_eq!(home.data_files(), before, "an import left files behind");
}

/// A snapshot save that fills the disk part way through writing the
/// guest's state: one line, 507, no snapshot row and no file left, and the
/// VM runs on (not paused, answering) as before; with room again the same
/// save succeeds.
#[test]
fn a_full_disk_during_a_snapshot_save_leaves_no_snapshot_and_the_vm_running() {
    if !nix_is_root() {
        skip("mounting a tmpfs needs root");
        return;
    }
    let Some(deb) = kernel_deb() else { return };
    agent_bin();
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let home = TestHome::new();
    let _fs = Tmpfs::mount(&home, "512m");
    home.ok(&["kernel", "import", "--deb", deb.to_str().unwrap()]);
    let src = tempfile::tempdir().unwrap();
    busybox_rootfs(src.path());
    home.ok(&[
        "image",
        "import",
        src.path().to_str().unwrap(),
        "--name",
        "bb",
    ]);
    home.ok(&SMALL_VM);
    home.ok(&["vm", "start", "v1"]);
    home.ok(&[
        "vm",
        "exec",
        "v1",
        "--",
        "sh",
        "-c",
        "echo kept > /root/mark",
    ]);
    let answers = || {
        let vm = home.json(&["vm", "show", "v1", "--json"]);
        assert_eq!(vm["desired_state"], "running", "{vm}");
        assert_eq!(vm["paused"], false, "{vm}");
        assert_eq!(
            home.ok(&["vm", "exec", "v1", "--", "cat", "/root/mark"])
                .trim(),
            "kept"
        );
    };
    {
        // A 256 MiB busybox guest saves as ~90 MB: 16 MiB is room to
        // start (the row, handles.json) and not to finish.
        let _full = Ballast::leaving(&home.data_dir(), 16 << 20);
        fails_for_space(
            &home,
            &["vm", "snapshot", "v1", "--name", "s1"],
            ("POST", "/v1/vms/v1/snapshot", Some(json!({"name": "s1"}))),
        );
        assert_eq!(home.json(&["snapshot", "ls", "--json"]), json!([]));
        answers();
    }
    let snap = home.json(&["vm", "snapshot", "v1", "--name", "s1", "--json"]);
    assert_eq!(snap["state"], "ready", "{snap}");
    answers();
    home.ok(&["snapshot", "rm", "s1"]);
    home.ok(&["vm", "kill", "v1"]);
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A guest that fills its own work disk gets ENOSPC inside, as on any
/// machine, and the VM keeps answering: nothing on the host hangs or fills.
#[test]
fn a_guest_filling_its_work_disk_gets_enospc() {
    let Some(home) = banger_testkit::boot_home() else {
        return;
    };
    home.ok(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "filler",
        "--memory",
        "256M",
        "--work-disk-size",
        "64M",
    ]);
    home.ok(&["vm", "start", "filler"]);
    let out = home
        .banger()
        .args([
            "vm",
            "exec",
            "filler",
            "--",
            "sh",
            "-c",
            "cat /dev/zero > /root/fill; echo cat=$?; sync",
        ])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("cat=1"),
        "the write must fail: {stdout}{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    // The guest still answers, and the full disk still works for reads
    // and for freeing space.
    let size = home.ok(&[
        "vm",
        "exec",
        "filler",
        "--",
        "stat",
        "-c",
        "%s",
        "/root/fill",
    ]);
    let size: u64 = size.trim().parse().unwrap();
    assert!(size > 32 << 20, "only {size} bytes written");
    home.ok(&["vm", "exec", "filler", "--", "rm", "/root/fill"]);
    assert_eq!(
        home.ok(&["vm", "exec", "filler", "--", "echo", "alive"])
            .trim(),
        "alive"
    );
    home.ok(&["vm", "stop", "filler"]);
}
