//! End to end: a real VM under QEMU (TCG where KVM cannot boot the kernel)
//! with the banger initramfs, a busybox base image, overlay and work disks;
//! the host drives the guest agent over the virtio-serial socket.
//!
//! Needs: `qemu-system-x86_64`, `mkfs.ext4`, `/bin/busybox` (busybox-static),
//! and `BANGER_TEST_KERNEL_DIR` = a directory holding `vmlinuz` and
//! `modules/<release>/` (e.g. extracted from Debian's
//! `linux-image-*-cloud-amd64`). Set `BANGER_AGENT_BIN` to use a prebuilt
//! static agent instead of building one. Without the kernel the tests fail
//! unless they are named in `BANGER_ALLOW_SKIP`. The same boot with a real
//! systemd is `banger-cli`'s `tests/boot.rs`, through the daemon.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use banger_proto::client::{AgentClient, ClientError, ExecOutput};
use banger_proto::{ExecRequest, ExitStatus, TtySize};
use banger_vmm::qemu::QemuDriver;
use banger_vmm::{DiskRole, DiskSpec, Driver, LaunchSpec, StopHow, VmHandles};

/// One VM at a time: the machine has two cores and TCG is CPU-bound.
static VM_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("busybox is required: apt-get install busybox-static");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The static agent: from BANGER_AGENT_BIN, or built once per test run.
fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("BANGER_AGENT_BIN") {
            return p.into();
        }
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        // A target dir of its own: the outer `cargo test` holds the lock of
        // its profile directory.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target"))
            .join("agent-static");
        run(Command::new(env!("CARGO"))
            .current_dir(&ws)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "-q",
                "-p",
                "banger-agent",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
            ]));
        target.join("x86_64-unknown-linux-gnu/release/banger-agent")
    })
    .clone()
}

struct Kernel {
    vmlinuz: PathBuf,
    initramfs: PathBuf,
}

/// Kernel + initramfs, built once per test binary.
fn kernel() -> Option<&'static Kernel> {
    static K: OnceLock<Option<Kernel>> = OnceLock::new();
    K.get_or_init(|| {
        let dir = banger_testkit::kernel_dir()?;
        let modules = std::fs::read_dir(dir.join("modules"))
            .expect("kernel dir has modules/")
            .flatten()
            .next()
            .expect("modules/<release> exists")
            .path();
        // In cargo's scratch dir for tests, replaced on each run: a static
        // has no destructor, so a file in /tmp would be left behind.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-qemu-initramfs.cpio");
        let t = Instant::now();
        // Uncompressed by default: measured faster to boot under TCG.
        let compression = match std::env::var("BANGER_TEST_INITRAMFS_COMPRESSION").as_deref() {
            Ok("gzip") => banger_initramfs::Compression::Gzip,
            _ => banger_initramfs::Compression::None,
        };
        let info = banger_initramfs::build_with(
            &agent_bin(),
            Some(&modules),
            banger_initramfs::DEFAULT_MODULES,
            &out,
            compression,
        )
        .expect("build initramfs");
        eprintln!(
            "initramfs: {} bytes, modules {:?}, built in {:?}",
            info.size,
            info.modules,
            t.elapsed()
        );
        Some(Kernel {
            vmlinuz: dir.join("vmlinuz"),
            initramfs: out,
        })
    })
    .as_ref()
}

fn mkfs(dir: &Path, image: &Path, size_mib: u32) {
    run(Command::new("truncate")
        .arg(format!("-s{size_mib}M"))
        .arg(image));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(dir)
        .arg(image));
}

/// A VM's disks in a temp dir: busybox base (with or without an init),
/// overlay with upper/ and work/, empty work disk.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(with_init: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        for d in [
            "bin", "sbin", "etc", "root", "proc", "sys", "dev", "run", "tmp",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
        let list = Command::new(root.join("bin/busybox"))
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet == "busybox" || (applet == "init" && !with_init) {
                continue;
            }
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        if with_init {
            std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).unwrap();
            // No getty, no rcS: an init that only waits and reaps, and
            // marks that it ran.
            std::fs::write(
                root.join("etc/inittab"),
                "::sysinit:/bin/touch /run/init-ran\n",
            )
            .unwrap();
        }
        mkfs(&root, &dir.path().join("base.ext4"), 32);
        let ov = dir.path().join("overlay");
        std::fs::create_dir_all(ov.join("upper")).unwrap();
        std::fs::create_dir_all(ov.join("work")).unwrap();
        mkfs(&ov, &dir.path().join("overlay.ext4"), 32);
        let wk = dir.path().join("workseed");
        std::fs::create_dir_all(&wk).unwrap();
        mkfs(&wk, &dir.path().join("work.ext4"), 32);
        Fixture { dir }
    }

    fn spec(&self, k: &Kernel, extra: &str) -> LaunchSpec {
        let p = self.dir.path();
        let disk = |role, name: &str, read_only| DiskSpec {
            role,
            path: p.join(name),
            read_only,
        };
        LaunchSpec {
            name: "e2e".into(),
            kernel: k.vmlinuz.clone(),
            initramfs: Some(k.initramfs.clone()),
            params: banger_proto::boot_params::BootParams::parse(extra).0,
            vcpus: 1,
            memory_mib: 256,
            ram: banger_vmm::GuestRam::Anonymous,
            tcg_cache_mib: None,
            inject_socket: None,
            disks: vec![
                disk(DiskRole::Base, "base.ext4", true),
                disk(DiskRole::Overlay, "overlay.ext4", false),
                disk(DiskRole::Work, "work.ext4", false),
            ],
            tap: None,
            tap_fd: None,
            mac: None,
            console_log: p.join("console.log"),
            console_max: 0,
            cgroup: None,
            agent_socket: p.join("agent.sock"),
            api_socket: p.join("qmp.sock"),
            vsock_cid: None,
            incoming: None,
            detached_nic: false,
            run_dir: p.join("run"),
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

/// Boots and connects; on failure, shows the console.
async fn boot(
    d: &QemuDriver,
    fx: &Fixture,
    spec: &LaunchSpec,
) -> (VmHandles, AgentClient, Duration) {
    let t = Instant::now();
    let h = d.spawn(spec).await.expect("spawn qemu");
    match d.connect_agent(&h, READY_TIMEOUT).await {
        Ok(c) => {
            let ready = t.elapsed();
            eprintln!(
                "boot-to-agent-ready: {ready:?} (agent {})",
                c.agent_version()
            );
            (h, c, ready)
        }
        Err(e) => {
            let _ = d.kill(&h);
            panic!("agent not ready: {e:?}\n--- console ---\n{}", fx.console());
        }
    }
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        cwd: None,
        user: None,
        tty: None,
        stdin: false,
    }
}

async fn output(c: &AgentClient, argv: &[&str]) -> ExecOutput {
    c.exec(req(argv))
        .await
        .expect("exec")
        .output()
        .await
        .expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_runs_commands_and_keeps_the_work_disk() {
    let Some(k) = kernel() else { return };
    let _g = VM_LOCK.lock().await;
    let d = QemuDriver::default();
    let fx = Fixture::new(false);
    let spec = fx.spec(k, "banger.init=none banger.hostname=e2e");
    let (h, c, _) = boot(&d, &fx, &spec).await;
    assert!(d.is_alive(&h));
    c.ping().await.unwrap();
    // QEMU runs under its seccomp filter (mode 2); its cgroup is
    // tests/confine.rs's.
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap();
    assert!(
        status.lines().any(|l| l == "Seccomp:\t2"),
        "QEMU is not sandboxed:\n{status}"
    );
    let o = output(&c, &["uname", "-a"]).await;
    assert_eq!(o.status, ExitStatus::Code { code: 0 });
    assert!(
        text(&o.stdout).starts_with("Linux e2e "),
        "{}",
        text(&o.stdout)
    );

    let o = output(&c, &["sh", "-c", "exit 42"]).await;
    assert_eq!(o.status, ExitStatus::Code { code: 42 });
    let o = output(&c, &["sh", "-c", "kill -9 $$"]).await;
    assert_eq!(o.status, ExitStatus::Signaled { signal: 9 });
    assert_eq!(o.status.shell_code(), 137);
    let o = output(&c, &["sh", "-c", "echo out; echo err >&2"]).await;
    assert_eq!(
        (text(&o.stdout), text(&o.stderr)),
        ("out\n".into(), "err\n".into())
    );

    // The agent is PID 1 and the root is the overlay, /root the work disk.
    let o = output(
        &c,
        &[
            "sh",
            "-c",
            "cat /proc/1/comm; grep -E ' (/|/root) ' /proc/mounts",
        ],
    )
    .await;
    let s = text(&o.stdout);
    assert!(s.starts_with("init\n"), "{s}");
    assert!(s.contains("overlay / overlay"), "{s}");
    assert!(s.contains(" /root ext4 rw"), "{s}");

    // Stdin through to cat, with cwd and env.
    let mut r = req(&["sh", "-c", "cat; echo \"$FOO $(pwd)\""]);
    r.stdin = true;
    r.env = vec![("FOO".into(), "bar".into())];
    r.cwd = Some("/tmp".into());
    let e = c.exec(r).await.unwrap();
    e.write_stdin(b"hello\n").await.unwrap();
    e.close_stdin().unwrap();
    let o = e.output().await.unwrap();
    assert_eq!(text(&o.stdout), "hello\nbar /tmp\n");

    // Concurrency: A blocks on stdin while B runs to completion on the same
    // connection; then A is released.
    let mut ra = req(&["sh", "-c", "read x; echo got $x"]);
    ra.stdin = true;
    let a = c.exec(ra).await.unwrap();
    let b = output(&c, &["echo", "b"]).await;
    assert_eq!(text(&b.stdout), "b\n");
    a.write_stdin(b"one\n").await.unwrap();
    let o = a.output().await.unwrap();
    assert_eq!(text(&o.stdout), "got one\n");

    // Many at once.
    let t = Instant::now();
    let many: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let s = i.to_string();
                let o = output(&c, &["echo", &s]).await;
                assert_eq!(text(&o.stdout), format!("{i}\n"));
            })
        })
        .collect();
    for m in many {
        m.await.unwrap();
    }
    eprintln!("8 concurrent execs: {:?}", t.elapsed());

    // A pty: tty name, size, resize, signal.
    let mut r = req(&["sh", "-c", "tty; stty size; read x; stty size"]);
    r.tty = Some(TtySize { rows: 24, cols: 80 });
    r.stdin = true;
    let mut e = c.exec(r).await.unwrap();
    let mut out = e.stdout().unwrap();
    let mut seen = String::new();
    while !seen.contains("24 80") {
        seen.push_str(&text(&out.recv().await.expect("pty output")));
    }
    e.resize(TtySize {
        rows: 50,
        cols: 132,
    })
    .unwrap();
    e.write_stdin(b"\n").await.unwrap();
    while let Some(chunk) = out.recv().await {
        seen.push_str(&text(&chunk));
    }
    assert_eq!(e.wait().await.unwrap(), ExitStatus::Code { code: 0 });
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(seen.contains("50 132"), "{seen:?}");

    // Signal delivery.
    let e = c.exec(req(&["sleep", "100"])).await.unwrap();
    e.signal(15).unwrap();
    assert_eq!(e.wait().await.unwrap(), ExitStatus::Signaled { signal: 15 });

    // A missing program is an error a shell would exit 127 for, not a hang.
    match c.exec(req(&["/no/such/program"])).await {
        Err(ClientError::NotStarted { message, exit_code }) => {
            assert_eq!(exit_code, 127);
            assert!(message.contains("/no/such/program"), "{message}");
        }
        other => panic!("expected not-started, got {other:?}"),
    }
    let mut r = req(&["true"]);
    r.cwd = Some("/no/such/dir".into());
    match c.exec(r).await {
        Err(ClientError::Agent(m)) => assert!(m.contains("/no/such/dir"), "{m}"),
        other => panic!("expected agent error, got {other:?}"),
    }

    // Exec round trip.
    let n = 10;
    let t = Instant::now();
    for _ in 0..n {
        assert!(output(&c, &["true"]).await.status.success());
    }
    eprintln!(
        "exec round trip (`true`): {:?} avg over {n}",
        t.elapsed() / n
    );

    // State that must survive a reboot: the work disk and the overlay.
    let o = output(
        &c,
        &[
            "sh",
            "-c",
            "echo persisted > /root/keep.txt && echo upper > /etc/marker",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    // virtio-serial takes one host connection at a time: the driver's stop
    // opens its own, so ours must go first.
    drop(c);
    let t = Instant::now();
    let graceful = d
        .stop(&h, StopHow::Agent, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(graceful, "graceful stop\n{}", fx.console());
    eprintln!("agent shutdown to VMM exit: {:?}", t.elapsed());
    assert!(!d.is_alive(&h));

    let (h, c, _) = boot(&d, &fx, &spec).await;
    let o = output(&c, &["cat", "/root/keep.txt", "/etc/marker"]).await;
    assert_eq!(text(&o.stdout), "persisted\nupper\n");
    drop(c);
    assert!(
        d.stop(&h, StopHow::Agent, Duration::from_secs(30))
            .await
            .unwrap()
    );
    let console = fx.console();
    assert!(
        console.contains("banger-agent: serving on /dev/vport"),
        "{console}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_init_becomes_pid1_and_agent_keeps_serving() {
    let Some(k) = kernel() else { return };
    let _g = VM_LOCK.lock().await;
    let d = QemuDriver::default();
    let fx = Fixture::new(true);
    let spec = fx.spec(k, "banger.init=auto");
    let (h, c, _) = boot(&d, &fx, &spec).await;
    // busybox init runs its sysinit action asynchronously to us.
    let o = output(
        &c,
        &[
            "sh",
            "-c",
            "for i in $(seq 50); do [ -e /run/init-ran ] && break; sleep 0.1; done; \
        readlink /proc/1/exe; ls /run/init-ran; echo $PPID",
        ],
    )
    .await;
    let s = text(&o.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.first(), Some(&"/bin/busybox"), "{s}");
    assert_eq!(lines.get(1), Some(&"/run/init-ran"), "{s}");
    assert_ne!(lines.get(2), Some(&"1"), "agent must not be PID 1: {s}");
    drop(c);
    let t = Instant::now();
    let graceful = d
        .stop(&h, StopHow::Agent, Duration::from_secs(40))
        .await
        .unwrap();
    eprintln!("init-path shutdown: {:?}", t.elapsed());
    assert!(graceful, "busybox init did not power off\n{}", fx.console());
    assert!(
        t.elapsed() < Duration::from_secs(18),
        "the agent's forced-poweroff fallback ran: init ignored the request\n{}",
        fx.console()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_init_stays_pid1_and_qmp_quit_works() {
    let Some(k) = kernel() else { return };
    let _g = VM_LOCK.lock().await;
    let d = QemuDriver::default();
    let fx = Fixture::new(false);
    let spec = fx.spec(k, "");
    let (h, c, _) = boot(&d, &fx, &spec).await;
    let o = output(&c, &["sh", "-c", "echo $PPID"]).await;
    assert_eq!(text(&o.stdout), "1\n");
    let mut q = banger_vmm::qemu::qmp::Qmp::connect(&h.api_socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(q.status().await.unwrap(), "running");
    q.quit().await.unwrap();
    assert!(banger_vmm::wait_exit(&h, Duration::from_secs(10)).await);
    // The agent connection sees the end.
    assert!(c.ping().await.is_err());
}
