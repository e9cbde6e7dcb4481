//! Banger's requests against a real Firecracker process (the binary
//! `scripts/build-firecracker.sh` builds, `BANGER_FIRECRACKER_BIN`), here
//! unjailed (`tests/firecracker_jailed.rs` runs it under the jailer): every
//! request the driver sends is accepted, each rule banger's request types
//! encode is one the real binary enforces, a refusal becomes a one-line
//! error with Firecracker's `fault_message` and the field, and a start that
//! fails leaves no process or socket behind.
//!
//! Firecracker runs in a network namespace of its own (`unshare -n`) so the
//! tap it creates for the NIC never touches the host's network.
//! `InstanceStart` is sent with Debian's real kernel as an ELF vmlinux: on
//! a host whose KVM cannot boot it (PVM) Firecracker accepts the start and
//! the guest hangs, which is the case the driver's bounded wait covers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_testkit::firecracker::{debian_vmlinux, firecracker_bin};
use banger_vmm::firecracker::api::{self, ActionType, ApiRequest, VmRunState};
use banger_vmm::firecracker::{FirecrackerDriver, client};
use banger_vmm::{DiskRole, DiskSpec, Driver, LaunchSpec, VmmError, kvm_limitation};
use serde_json::json;

/// A Firecracker process in its own network namespace, killed on drop.
struct Firecracker {
    child: Child,
    sock: PathBuf,
}

impl Firecracker {
    fn start(bin: &Path, dir: &Path) -> Firecracker {
        let sock = dir.join("api.sock");
        let child = Command::new("unshare")
            .arg("-n")
            .arg(bin)
            .arg("--api-sock")
            .arg(&sock)
            .args(["--id", "banger-test"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("fc.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("fc.err")).unwrap())
            .spawn()
            .expect("run unshare -n firecracker");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                Instant::now() < deadline,
                "no API socket at {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Firecracker { child, sock }
    }
}

impl Drop for Firecracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spec of real files: the vmlinux, an initrd, three sparse disks, a
/// tap and a MAC. `panic=0` keeps a guest that boots without an init (on
/// a KVM host) halted rather than gone, so the requests after the start
/// still reach a live VMM.
fn spec(dir: &Path, kernel: &Path) -> LaunchSpec {
    let file = |name: &str, len: u64| {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let disk = |role, name: &str, read_only| DiskSpec {
        role,
        path: file(name, 64 << 20),
        read_only,
    };
    LaunchSpec {
        name: "fc-real".into(),
        kernel: kernel.into(),
        initramfs: Some(file("initramfs.cpio", 4096)),
        params: banger_proto::boot_params::BootParams::parse("banger.init=none").0,
        vcpus: 2,
        memory_mib: 256,
        ram: banger_vmm::GuestRam::Anonymous,
        tcg_cache_mib: None,
        inject_socket: None,
        disks: vec![
            disk(DiskRole::Base, "base.ext4", true),
            disk(DiskRole::Overlay, "overlay.ext4", false),
            disk(DiskRole::Work, "work.ext4", false),
        ],
        tap: Some("tap-fcreal".into()),
        tap_fd: None,
        mac: Some("06:00:ac:10:00:02".into()),
        console_log: dir.join("console.log"),
        console_max: 0,
        cgroup: None,
        agent_socket: dir.join("agent.sock"),
        api_socket: dir.join("api.sock"),
        vsock_cid: Some(7),
        incoming: None,
        detached_nic: false,
        run_dir,
    }
}

async fn status(sock: &Path, req: &ApiRequest) -> u16 {
    match client::send(sock, req).await {
        Ok((s, _)) => s,
        Err(e) => panic!("{} {} refused: {e}", req.method, req.path),
    }
}

#[tokio::test]
async fn every_request_banger_sends_is_accepted() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(vmlinux) = debian_vmlinux(dir.path()) else {
        return;
    };
    let spec = spec(dir.path(), &vmlinux);
    let fc = Firecracker::start(&bin, dir.path());

    // On one connection, as the driver sends them.
    let reqs = banger_vmm::firecracker::launch::configure_requests(&spec).unwrap();
    let mut session = client::Session::connect(&fc.sock).await.unwrap();
    let mut sent = Vec::new();
    for r in &reqs {
        match session.send(r).await {
            Ok((s, _)) => assert_eq!(s, 204, "{} {}", r.method, r.path),
            Err(e) => panic!("{} {} refused: {e}", r.method, r.path),
        }
        sent.push(r.path.clone());
    }
    for want in [
        "/machine-config",
        "/boot-source",
        "/drives/banger_base",
        "/drives/banger_overlay",
        "/drives/banger_work",
        "/network-interfaces/eth0",
        "/vsock",
        "/balloon",
    ] {
        assert!(sent.iter().any(|p| p == want), "{want} not sent: {sent:?}");
    }

    // What Firecracker now holds is what banger meant.
    let get = ApiRequest {
        method: "GET",
        path: "/vm/config".into(),
        body: serde_json::Value::Null,
    };
    let (_, body) = client::send(&fc.sock, &get).await.unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let drives: Vec<(&str, bool)> = cfg["drives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["drive_id"].as_str().unwrap(),
                d["is_read_only"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        drives,
        [
            ("banger_base", true),
            ("banger_overlay", false),
            ("banger_work", false)
        ]
    );
    assert_eq!(cfg["machine-config"]["vcpu_count"], 2);
    assert_eq!(cfg["machine-config"]["mem_size_mib"], 256);
    assert_eq!(cfg["network-interfaces"][0]["host_dev_name"], "tap-fcreal");
    assert_eq!(cfg["vsock"]["guest_cid"], 7);
    assert_eq!(
        cfg["boot-source"]["boot_args"],
        banger_vmm::firecracker::launch::cmdline(&spec)
    );
    assert_eq!(cfg["balloon"]["amount_mib"], 0, "{cfg}");
    assert_eq!(cfg["balloon"]["free_page_reporting"], true, "{cfg}");
    assert_eq!(cfg["balloon"]["deflate_on_oom"], false, "{cfg}");

    // The start, and what banger sends to a started VM.
    let start = api::action(ActionType::InstanceStart);
    assert_eq!(status(&fc.sock, &start).await, 204);
    for r in [
        api::set_vm_state(VmRunState::Paused),
        api::set_vm_state(VmRunState::Resumed),
        api::action(ActionType::SendCtrlAltDel),
    ] {
        assert_eq!(status(&fc.sock, &r).await, 204, "{} {}", r.method, r.path);
    }
    // Firecracker's own log goes to its stdout (the bounded console), not
    // to a file of its own: banger configures no /logger or /metrics.
    assert!(!sent.iter().any(|p| p == "/logger" || p == "/metrics"));
    // `vm set --memory 128M` of this 256 MiB VM: the body is parsed and
    // reaches the device, which Firecracker activates only once the
    // guest's driver does (no guest boots on this host, so it says so).
    let resize = banger_vmm::firecracker::balloon::resize(256, 128).unwrap();
    match client::send(&fc.sock, &resize).await {
        Ok((s, _)) => assert_eq!(s, 204),
        Err(e) => assert!(
            e.to_string().contains("Device not activated"),
            "PATCH /balloon refused for another reason: {e}"
        ),
    }
}

/// Sends a raw body; returns the one-line error banger makes of the refusal.
async fn refused(sock: &Path, method: &'static str, path: &str, body: serde_json::Value) -> String {
    let req = ApiRequest {
        method,
        path: path.into(),
        body,
    };
    let e = client::send(sock, &req)
        .await
        .expect_err("firecracker accepted a bad request");
    assert!(matches!(e, VmmError::Api { status: 400, .. }), "{e:?}");
    let line = e.to_string();
    eprintln!("banger: {line}");
    assert!(!line.contains('\n'), "not one line: {line}");
    assert!(line.contains(path), "does not name {path}: {line}");
    line
}

/// Each rule the request types encode, proven against the real binary:
/// banger refuses the body, and Firecracker refuses it too, with a
/// message banger passes on.
#[tokio::test]
async fn refusals_carry_the_fault_and_match_bangers_own_rules() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fc = Firecracker::start(&bin, dir.path());
    let s = &fc.sock;

    // Resource ids: the bug of issue 12.
    assert!(api::ResourceId::new("banger-base").is_err());
    let e = refused(
        s,
        "PUT",
        "/drives/banger-base",
        json!({"drive_id": "banger-base", "is_root_device": false,
               "path_on_host": "/dev/null", "is_read_only": true}),
    )
    .await;
    assert!(
        e.contains("API Resource IDs can only contain alphanumeric characters and underscores"),
        "{e}"
    );

    // vCPU count, SMT, memory.
    for (vcpu_count, smt, mem) in [(33u8, false, 128u32), (3, true, 128), (1, false, 0)] {
        let body = api::MachineConfig {
            vcpu_count,
            mem_size_mib: mem,
            smt: Some(smt),
        };
        let ours = api::put("/machine-config", &body).unwrap_err().to_string();
        let field = if mem == 0 {
            "mem_size_mib"
        } else {
            "vcpu_count"
        };
        assert!(ours.contains(field), "{ours}");
        let theirs = refused(
            s,
            "PUT",
            "/machine-config",
            serde_json::to_value(&body).unwrap(),
        )
        .await;
        assert!(theirs.contains("Machine config error"), "{theirs}");
        // The fault does not name the field; the body sent, on the same line, does.
        assert!(theirs.contains(&format!("\"{field}\":")), "{theirs}");
    }
    let e = refused(
        s,
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 64, "mem_size_mib": 128}),
    )
    .await;
    assert!(
        e.contains("The number of vCPUs must be greater than 0"),
        "{e}"
    );

    // The command line: 2047 bytes fit, 2048 do not.
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    let boot = |n: usize| api::BootSource {
        kernel_image_path: kernel.display().to_string(),
        boot_args: Some("x".repeat(n)),
        initrd_path: None,
    };
    let fits = api::put("/boot-source", &boot(api::MAX_CMDLINE)).unwrap();
    assert_eq!(status(s, &fits).await, 204);
    assert!(api::put("/boot-source", &boot(api::MAX_CMDLINE + 1)).is_err());
    let e = refused(
        s,
        "PUT",
        "/boot-source",
        serde_json::to_value(boot(api::MAX_CMDLINE + 1)).unwrap(),
    )
    .await;
    assert!(e.contains("command line is invalid"), "{e}");

    // Socket path length.
    let long = format!(
        "{}/{}",
        dir.path().display(),
        "s".repeat(api::MAX_SOCKET_PATH)
    );
    let vsock = api::Vsock {
        guest_cid: 3,
        uds_path: long,
    };
    assert!(api::put("/vsock", &vsock).is_err());
    let e = refused(s, "PUT", "/vsock", serde_json::to_value(&vsock).unwrap()).await;
    assert!(e.contains("SUN_LEN"), "{e}");

    // Tap name and MAC.
    let nic = |tap: &str, mac: &str| api::NetworkInterface {
        iface_id: api::iface_id(),
        host_dev_name: tap.into(),
        guest_mac: Some(mac.into()),
    };
    for bad in [
        nic("tap-name-too-long", "06:00:00:00:00:01"),
        nic("tap0", "06:00:00:00:01"),
    ] {
        assert!(api::put("/network-interfaces/eth0", &bad).is_err());
        refused(
            s,
            "PUT",
            "/network-interfaces/eth0",
            serde_json::to_value(&bad).unwrap(),
        )
        .await;
    }

    // A missing file: the fault names it.
    let e = refused(
        s,
        "PUT",
        "/drives/banger_base",
        json!({"drive_id": "banger_base", "is_root_device": false,
               "path_on_host": "/no/such/base.ext4", "is_read_only": true}),
    )
    .await;
    assert!(
        e.contains("/no/such/base.ext4") && e.contains("No such file"),
        "{e}"
    );

    // Pausing before the start is refused, and says why.
    let e = refused(s, "PATCH", "/vm", json!({"state": "Paused"})).await;
    assert!(e.contains("not supported before starting"), "{e}");

    // A balloon resize before the start: there is no balloon to resize.
    let e = refused(s, "PATCH", "/balloon", json!({"amount_mib": 64})).await;
    assert!(e.contains("balloon"), "{e}");
}

fn assert_nothing_left(spec: &LaunchSpec) {
    assert_eq!(
        banger_testkit::procs::mentioning(&spec.api_socket.display().to_string()),
        Vec::<u32>::new(),
        "a firecracker is left"
    );
    assert!(!spec.api_socket.exists(), "API socket left");
    assert!(!spec.agent_socket.exists(), "vsock socket left");
}

/// Through the driver: a refused configuration, a process that exits at
/// once and a bzImage each fail clearly and leave nothing running; a start
/// on a host whose KVM cannot boot the kernel fails within the bounded
/// window, naming the reason.
#[tokio::test]
async fn driver_failures_are_clear_and_leave_nothing() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(vmlinux) = debian_vmlinux(dir.path()) else {
        return;
    };
    let d = FirecrackerDriver {
        binary: bin.display().to_string(),
        jailer: None,
    };
    let mut spec = spec(dir.path(), &vmlinux);
    // The driver runs Firecracker in the host's namespace: no NIC here.
    spec.tap = None;
    spec.mac = None;

    // A drive Firecracker cannot open.
    let mut bad = spec.clone();
    bad.disks[1].path = dir.path().join("missing.ext4");
    let e = d.spawn(&bad).await.unwrap_err().to_string();
    eprintln!("banger: {e}");
    assert!(
        e.contains("/drives/banger_overlay") && e.contains("missing.ext4"),
        "{e}"
    );
    assert_nothing_left(&bad);

    // Firecracker exits at start (its socket's directory does not exist):
    // its own message, at once rather than after the socket timeout.
    let mut bad = spec.clone();
    bad.api_socket = dir.path().join("no-such-dir/api.sock");
    let t = Instant::now();
    let e = d.spawn(&bad).await.unwrap_err().to_string();
    eprintln!("banger: {e}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        e.contains("failed to start") && e.contains("api.sock"),
        "{e}"
    );
    assert_nothing_left(&bad);

    // A bzImage is refused before anything starts.
    let mut bad = spec.clone();
    bad.kernel = dir.path().join("vmlinuz");
    banger_testkit::fake_bzimage(&bad.kernel, "6.1.0-test");
    let e = d.spawn(&bad).await.unwrap_err().to_string();
    eprintln!("banger: {e}");
    assert!(e.contains("ELF vmlinux"), "{e}");
    assert_nothing_left(&bad);

    let Some(why) = kvm_limitation() else {
        // KVM boots this kernel here: tests/boot_firecracker.rs covers it.
        return;
    };
    let h = d.spawn(&spec).await.expect("firecracker accepts the start");
    assert!(d.is_alive(&h));
    let t = Instant::now();
    let e = d
        .connect_agent(&h, Duration::from_secs(90))
        .await
        .expect_err("no guest can answer here");
    let waited = t.elapsed();
    assert!(matches!(e, VmmError::KvmCannotBoot(..)), "{e:?}");
    eprintln!("banger: {e} (after {waited:?})");
    assert!(e.to_string().contains(why), "{e}");
    assert!(
        waited < banger_vmm::firecracker::LIMITED_KVM_BOOT_WINDOW + Duration::from_secs(3),
        "waited {waited:?}"
    );
    d.kill(&h).unwrap();
    assert!(banger_vmm::wait_exit(&h, Duration::from_secs(5)).await);
    assert_eq!(
        banger_testkit::procs::mentioning(&spec.api_socket.display().to_string()),
        Vec::<u32>::new()
    );
}

/// `/snapshot/create` and `/snapshot/load` as banger builds them reach the
/// real binary's handlers: it cannot run a guest here, so it answers a
/// state error (create before the VM runs, load into a configured VM), not
/// a parse error; a malformed body is a one-line banger error naming the
/// field.
#[tokio::test]
async fn snapshot_requests_are_parsed_by_the_real_binary() {
    let Some(bin) = firecracker_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fc = Firecracker::start(&bin, dir.path());
    let s = &fc.sock;
    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).unwrap();

    // Before any boot: create is refused for the VM's state.
    let create = api::snapshot_create(&snap).unwrap();
    let e = client::send(s, &create)
        .await
        .expect_err("create before boot");
    let line = e.to_string();
    eprintln!("banger: {line}");
    assert!(matches!(e, VmmError::Api { status: 400, .. }), "{e:?}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        !line.contains("deserializ") && !line.contains("unknown field"),
        "the body was not understood: {line}"
    );
    assert!(
        line.contains("not supported before starting the microVM")
            || line.contains("not allowed before")
            || line.contains("paused"),
        "{line}"
    );

    let spec = spec(dir.path(), Path::new("/nonexistent"));
    // A malformed body: Firecracker's parse error, one line, naming the field.
    let e = refused(
        s,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Disk", "backend_path": "/m"}}),
    )
    .await;
    assert!(e.contains("backend_type") || e.contains("Disk"), "{e}");
    // Load reads the body, then fails on the missing state file: the
    // parse succeeded. (Firecracker exits after a failed load, so this
    // comes last.)
    let load = api::snapshot_load(&snap, &spec).unwrap();
    let e = client::send(s, &load).await.expect_err("load of no file");
    let line = e.to_string();
    eprintln!("banger: {line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        !line.contains("deserializ") && !line.contains("unknown field"),
        "the body was not understood: {line}"
    );
    assert!(
        line.contains("vmstate.bin") || line.to_lowercase().contains("snapshot"),
        "{line}"
    );

    // And banger refuses what it can see before sending.
    let mut bad = spec.clone();
    bad.agent_socket = dir.path().join("x".repeat(120));
    let e = api::snapshot_load(&snap, &bad).unwrap_err().to_string();
    assert!(e.contains("vsock_override uds_path"), "{e}");
}
