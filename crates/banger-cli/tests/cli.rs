//! The CLI against a real daemon, real SQLite and real e2fsprogs, each test
//! in its own temporary banger home.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use banger_testkit::{TestHome, fake_bzimage, require_tool, tiny_rootfs};

fn tools() {
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("debugfs", "e2fsprogs");
    require_tool("fakeroot", "fakeroot");
}

/// A home with one kernel (fake bzImage) and one image (tiny rootfs dir).
fn ready_home() -> TestHome {
    tools();
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    fake_bzimage(&k, "6.1.0-test");
    home.ok(&["kernel", "import", k.to_str().unwrap()]);
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);
    home
}

#[test]
fn daemon_starts_on_demand_and_stops() {
    let home = TestHome::new();
    home.banger().args(["daemon", "status"]).assert().code(3);
    // Any command starts the daemon.
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
    let status = home.json(&["daemon", "status", "--json"]);
    assert_eq!(status["api_version"], 1);
    let socket = status["socket"].as_str().unwrap().to_string();
    assert!(Path::new(&socket).exists());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket must be private to the user");
    assert!(home.ok(&["daemon", "stop"]).contains("stopped"));
    assert!(!Path::new(&socket).exists());
    home.banger().args(["daemon", "status"]).assert().code(3);
}

#[test]
fn second_daemon_refuses_to_start() {
    let home = TestHome::new();
    home.ok(&["vm", "ls"]);
    let bangerd = banger_testkit::bin_dir().join("bangerd");
    let out = std::process::Command::new(bangerd)
        .env_clear()
        .env("HOME", home.path())
        .env("BANGER_HOME", home.data_dir())
        .env("BANGER_CONFIG", home.path().join("config.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another bangerd (pid "));
}

/// Two data dirs in one login session (one `XDG_RUNTIME_DIR`) get two
/// daemons: each CLI sees its own VMs, never the other's.
#[test]
fn each_data_dir_gets_its_own_daemon() {
    let runtime = tempfile::tempdir().unwrap();
    let (a, b) = (TestHome::new(), TestHome::new());
    let status = |home: &TestHome| -> serde_json::Value {
        let out = home
            .banger()
            .env("XDG_RUNTIME_DIR", runtime.path())
            .args(["daemon", "status", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for home in [&a, &b] {
        home.banger()
            .env("XDG_RUNTIME_DIR", runtime.path())
            .args(["vm", "ls"])
            .assert()
            .success();
        assert!(home.data_dir().join("state.db").exists());
    }
    let (sa, sb) = (status(&a), status(&b));
    assert_eq!(sa["data_dir"], a.data_dir().to_str().unwrap());
    assert_eq!(sb["data_dir"], b.data_dir().to_str().unwrap());
    assert_ne!(sa["pid"], sb["pid"]);
    assert_ne!(sa["socket"], sb["socket"]);
    assert!(
        sa["socket"]
            .as_str()
            .unwrap()
            .starts_with(runtime.path().join("banger").to_str().unwrap()),
        "{sa}"
    );
    for home in [&a, &b] {
        home.banger()
            .env("XDG_RUNTIME_DIR", runtime.path())
            .args(["daemon", "stop"])
            .assert()
            .success();
    }
}

/// A daemon answering on the socket for another data dir is refused, not
/// used: it would show and change the wrong VMs.
#[test]
fn daemon_of_another_data_dir_is_refused() {
    let (a, b) = (TestHome::new(), TestHome::new());
    a.ok(&["vm", "ls"]);
    // Point b's runtime dir at a's: b's CLI finds a's daemon there.
    std::fs::create_dir_all(b.data_dir()).unwrap();
    std::os::unix::fs::symlink(a.data_dir().join("run"), b.data_dir().join("run")).unwrap();
    let err = b.fails(&["vm", "ls"]);
    assert!(err.contains("serves") && err.contains("not"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    a.ok(&["daemon", "stop"]);
}

#[test]
fn config_show_prints_defaults_and_rejects_typos() {
    let home = TestHome::new();
    let text = home.ok(&["config", "show"]);
    assert!(text.contains("vcpus = 2"), "{text}");
    assert!(text.contains("bridge_cidr = \"172.16.0.1/24\""), "{text}");
    let json = home.json(&["config", "show", "--json"]);
    assert_eq!(json["vm"]["work_disk_size"], 8u64 << 30);
    home.ok(&["daemon", "stop"]);

    let bad = TestHome::with_config("[vm]\nvpcus = 3\n");
    let err = bad.fails(&["vm", "ls"]);
    assert!(err.contains("vpcus"), "{err}");
}

#[test]
fn kernel_lifecycle() {
    let home = TestHome::new();
    let k = home.path().join("vmlinuz-test");
    fake_bzimage(&k, "6.1.0-99-test");
    assert_eq!(
        home.ok(&["kernel", "import", k.to_str().unwrap()]).trim(),
        "6.1.0-99-test"
    );
    home.ok(&["kernel", "import", k.to_str().unwrap(), "--name", "second"]);
    let list = home.json(&["kernel", "ls", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let first = home.json(&["kernel", "show", "6.1.0-99-test", "--json"]);
    assert_eq!(
        first["is_default"], true,
        "the first kernel becomes the default"
    );
    assert_eq!(first["release"], "6.1.0-99-test");
    assert!(Path::new(first["kernel_path"].as_str().unwrap()).exists());
    home.ok(&["kernel", "default", "second"]);
    assert_eq!(
        home.json(&["kernel", "show", "second", "--json"])["is_default"],
        true
    );
    assert_eq!(
        home.json(&["kernel", "show", "6.1.0-99-test", "--json"])["is_default"],
        false
    );

    let err = home.fails(&["kernel", "import", k.to_str().unwrap(), "--name", "second"]);
    assert!(err.contains("exists already"), "{err}");
    let junk = home.path().join("junk");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = home.fails(&["kernel", "import", junk.to_str().unwrap()]);
    assert!(err.to_lowercase().contains("kernel"), "{err}");
    home.fails(&["kernel", "import", "/nonexistent/vmlinuz"]);
    home.fails(&[
        "kernel",
        "import",
        k.to_str().unwrap(),
        "--name",
        "Bad/Name",
    ]);

    let dir = first["kernel_path"].as_str().unwrap().to_string();
    home.ok(&["kernel", "rm", "6.1.0-99-test"]);
    assert!(
        !Path::new(&dir).exists(),
        "kernel files removed with the record"
    );
    let err = home.fails(&["kernel", "show", "6.1.0-99-test"]);
    assert!(err.contains("no kernel named"), "{err}");
}

#[test]
fn image_import_keeps_content_and_ownership() {
    tools();
    let home = TestHome::new();
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);
    let img = home.json(&["image", "show", "tiny", "--json"]);
    let base = Path::new(img["base_path"].as_str().unwrap());
    assert_eq!(img["source"]["kind"], "directory");
    assert_eq!(img["has_init"], false);
    let os = banger_disk::read_file(base, "/etc/os-release").unwrap();
    assert!(String::from_utf8_lossy(&os).contains("tiny test rootfs"));
    let st = banger_disk::stat(base, "/bin/tool").unwrap();
    assert_eq!(st.perm, 0o755);
    let hard = banger_disk::stat(base, "/bin/tool-hard").unwrap();
    assert_eq!(hard.links, 2, "hardlinks stay hardlinks");
    banger_disk::fsck_check(base).unwrap();

    let err = home.fails(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);
    assert!(err.contains("exists already"), "{err}");
    home.fails(&["image", "import", "/nonexistent", "--name", "x"]);
    home.fails(&["image", "import", root.to_str().unwrap(), "--name", "../x"]);
    let listed = home.json(&["image", "ls", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn image_import_from_tarball() {
    tools();
    require_tool("tar", "tar");
    let home = TestHome::new();
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    let tarball = home.path().join("rootfs.tar.gz");
    let st = std::process::Command::new("tar")
        .args([
            "-czf",
            tarball.to_str().unwrap(),
            "--owner=0",
            "--group=0",
            "-C",
            root.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    home.ok(&[
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--name",
        "fromtar",
    ]);
    let img = home.json(&["image", "show", "fromtar", "--json"]);
    assert_eq!(img["source"]["kind"], "tarball");
    let base = Path::new(img["base_path"].as_str().unwrap());
    let st = banger_disk::stat(base, "/root/notes/hello.txt").unwrap();
    assert_eq!((st.uid, st.gid, st.perm), (0, 0, 0o600));
}

#[test]
fn vm_create_builds_disks_with_guest_files() {
    let home = ready_home();
    let out = home.ok(&[
        "vm", "create", "--name", "web", "--cpus", "1", "--memory", "512M",
    ]);
    assert_eq!(out.trim(), "web");
    let vm = home.json(&["vm", "show", "web", "--json"]);
    assert_eq!(vm["spec"]["vcpus"], 1);
    assert_eq!(vm["spec"]["memory_mib"], 512);
    assert_eq!(vm["desired_state"], "stopped");
    assert_eq!(vm["guest_ip"], "172.16.0.2");
    assert_eq!(vm["vsock_cid"], 3);

    let overlay = Path::new(vm["overlay_disk"].as_str().unwrap());
    let work = Path::new(vm["work_disk"].as_str().unwrap());
    for disk in [overlay, work] {
        let meta = std::fs::metadata(disk).unwrap();
        assert_eq!(
            meta.len(),
            8 << 30,
            "{} has the requested size",
            disk.display()
        );
        assert!(
            meta.blocks() * 512 < 64 << 20,
            "{} is sparse",
            disk.display()
        );
        banger_disk::fsck_check(disk).unwrap();
    }
    let hostname = banger_disk::read_file(overlay, "/upper/etc/hostname").unwrap();
    assert_eq!(hostname, b"web\n");
    let hosts =
        String::from_utf8(banger_disk::read_file(overlay, "/upper/etc/hosts").unwrap()).unwrap();
    assert!(hosts.contains("172.16.0.2\tweb.vm web"), "{hosts}");
    for f in [
        "/upper/etc/hostname",
        "/upper/etc/hosts",
        "/upper/etc/resolv.conf",
        "/upper/etc/ssh/sshd_config.d/99-banger.conf",
        "/upper/etc/systemd/network/10-banger.network",
        "/upper/etc",
        "/work",
    ] {
        let st = banger_disk::stat(overlay, f).unwrap();
        assert_eq!((st.uid, st.gid), (0, 0), "{f} owned by root");
    }
    let notes = banger_disk::read_file(work, "/notes/hello.txt").unwrap();
    assert_eq!(notes, b"hello from the work seed\n");
    let st = banger_disk::stat(work, "/notes/hello.txt").unwrap();
    assert_eq!((st.uid, st.gid, st.perm), (0, 0, 0o600));
    let root = banger_disk::stat(work, "/").unwrap();
    assert_eq!(
        (root.uid, root.gid, root.perm),
        (0, 0, 0o700),
        "/root keeps its mode"
    );

    // A second VM gets the next address and CID and a generated name.
    let second = home.json(&["vm", "create", "tiny", "--json"]);
    assert_eq!(second["guest_ip"], "172.16.0.3");
    assert_eq!(second["vsock_cid"], 4);
    let listed = home.ok(&["vm", "ls"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(listed.contains("web") && listed.contains(second["name"].as_str().unwrap()));
}

#[test]
fn vm_names_resolve_by_prefix_and_reject_ambiguity() {
    let home = ready_home();
    home.ok(&["vm", "create", "--name", "alpha-one"]);
    home.ok(&["vm", "create", "--name", "alpha-two"]);
    let one = home.json(&["vm", "show", "alpha-o", "--json"]);
    assert_eq!(one["name"], "alpha-one");
    let by_id = home.json(&["vm", "show", &one["id"].as_str().unwrap()[..10], "--json"]);
    assert_eq!(by_id["name"], "alpha-one");
    let err = home.fails(&["vm", "show", "alpha"]);
    assert!(
        err.contains("ambiguous") && err.contains("alpha-one") && err.contains("alpha-two"),
        "{err}"
    );
    let err = home.fails(&["vm", "create", "--name", "alpha-one"]);
    assert!(err.contains("exists already"), "{err}");
}

#[test]
fn vm_create_rejects_bad_input_without_leftovers() {
    let home = ready_home();
    let before = home.data_files();
    for (args, needle) in [
        (vec!["vm", "create", "--name", "Bad_Name"], "vm name"),
        (vec!["vm", "create", "--name=-x"], "vm name"),
        (vec!["vm", "create", "--bogus"], "unexpected argument"),
        (vec!["vm", "create", "--work-disk-size", "1M"], "too small"),
        (
            vec!["vm", "create", "--work-disk-size", "8X"],
            "unknown unit",
        ),
        (
            vec!["vm", "create", "--overlay-disk-size", "100T"],
            "too large",
        ),
        (vec!["vm", "create", "--cpus", "0"], "vcpus"),
        (vec!["vm", "create", "--memory", "1"], "memory"),
        (vec!["vm", "create", "no-such-image"], "no image named"),
        (vec!["vm", "create", "--kernel", "nope"], "no kernel named"),
    ] {
        let err = home.fails(&args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(home.data_files(), before, "failed creates leave no files");
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
}

#[test]
fn failed_disk_build_leaves_nothing() {
    tools();
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    fake_bzimage(&k, "6.1.0-test");
    home.ok(&["kernel", "import", k.to_str().unwrap()]);
    // A work seed bigger than the smallest work disk: mkfs.ext4 -d runs out
    // of blocks half way through the create.
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    let big: Vec<u8> = (0..96u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13).to_le_bytes()[0])
        .collect();
    std::fs::write(root.join("root/big.bin"), big).unwrap();
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "fat"]);
    let before = home.data_files();
    let err = home.fails(&[
        "vm",
        "create",
        "--name",
        "toolarge",
        "--work-disk-size",
        "64M",
    ]);
    assert!(err.contains("work disk"), "{err}");
    assert_eq!(home.data_files(), before, "no disks left behind");
    assert_eq!(home.json(&["vm", "ls", "--json"]), serde_json::json!([]));
    // The name is free again.
    home.ok(&[
        "vm",
        "create",
        "--name",
        "toolarge",
        "--work-disk-size",
        "256M",
    ]);
}

#[test]
fn vm_set_and_rm() {
    let home = ready_home();
    home.ok(&["vm", "create", "--name", "box", "--work-disk-size", "1G"]);
    let vm = home.json(&[
        "vm",
        "set",
        "box",
        "--cpus",
        "4",
        "--memory",
        "2G",
        "--work-disk-size",
        "2G",
        "--json",
    ]);
    assert_eq!(vm["spec"]["vcpus"], 4);
    assert_eq!(vm["spec"]["memory_mib"], 2048);
    assert_eq!(vm["spec"]["work_disk_bytes"], 2u64 << 30);
    let work = Path::new(vm["work_disk"].as_str().unwrap());
    assert_eq!(std::fs::metadata(work).unwrap().len(), 2 << 30);
    banger_disk::fsck_check(work).unwrap();
    assert_eq!(
        banger_disk::read_file(work, "/notes/hello.txt").unwrap(),
        b"hello from the work seed\n"
    );
    let err = home.fails(&["vm", "set", "box", "--work-disk-size", "1G"]);
    assert!(err.contains("shrinking"), "{err}");
    home.fails(&["vm", "set", "box"]);

    // The image cannot go while the VM uses it.
    let err = home.fails(&["image", "rm", "tiny"]);
    assert!(err.contains("used by vm box"), "{err}");
    let err = home.fails(&["kernel", "rm", "6.1.0-test"]);
    assert!(err.contains("used by vm box"), "{err}");

    let dir = vm["dir"].as_str().unwrap().to_string();
    assert_eq!(home.ok(&["vm", "rm", "box"]).trim(), "box");
    assert!(!Path::new(&dir).exists());
    home.fails(&["vm", "rm", "box"]);
    home.ok(&["image", "rm", "tiny"]);
    assert_eq!(
        home.data_files()
            .iter()
            .filter(|f| f.starts_with("images/"))
            .count(),
        0
    );
}

#[test]
fn api_is_usable_with_plain_http() {
    // What `curl --unix-socket` sees: JSON bodies and status codes.
    let home = ready_home();
    let status = home.json(&["daemon", "status", "--json"]);
    let socket = status["socket"].as_str().unwrap();
    let req = |raw: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = r#"{"name":"plain","vcpus":1}"#;
    let resp = req(&format!(
        "POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"name\":\"plain\""), "{resp}");
    let resp = req("GET /v1/vms/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains("\"code\":\"not_found\""), "{resp}");
    let bad = r#"{"nmae":"x"}"#;
    let resp = req(&format!(
        "POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{bad}",
        bad.len()
    ));
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("nmae"), "{resp}");
    let stream = |body: &str| {
        req(&format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nAccept: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    };
    let resp = stream(r#"{"name":"streamed"}"#);
    assert!(resp.contains("application/x-ndjson"), "{resp}");
    assert!(resp.contains("\"type\":\"stage\""), "{resp}");
    assert!(
        resp.contains("\"type\":\"result\"") && resp.contains("\"name\":\"streamed\""),
        "{resp}"
    );
    let resp = stream(body);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "a stream starts before the outcome is known: {resp}"
    );
    assert!(
        resp.contains("\"type\":\"error\"") && resp.contains("exists already"),
        "{resp}"
    );
}

#[test]
fn doctor_reports_each_check() {
    let home = TestHome::new();
    let out = home.banger().args(["doctor", "--json"]).output().unwrap();
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in [
        "kvm",
        "firecracker",
        "qemu",
        "vmm",
        "mkfs.ext4",
        "debugfs",
        "tun",
        "bridge",
        "nftables",
        "vsock",
    ] {
        assert!(names.contains(&n), "doctor lacks {n}: {names:?}");
    }
    let text = String::from_utf8(home.banger().arg("doctor").output().unwrap().stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        names.len(),
        "one line per check:\n{text}"
    );
}
