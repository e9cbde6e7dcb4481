//! The agent-backed guest routes end to end: a real busybox VM under QEMU,
//! the real daemon, HTTP on its socket. Flow control (a reader that reads
//! nothing leaves every process's memory bounded and the VM responsive),
//! TCP splicing with half-close, tar copies both ways, ports and stats.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use banger_testkit::{TestHome, boot_home, procs};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The bound the CLI's resident memory must stay under while a guest
/// floods output nobody reads.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// How much the daemon may grow while a guest floods output nobody reads
/// and during a bulk copy. Its growth is bounded, not its level: a debug
/// daemon already stands near 64 MiB before either starts (mostly its own
/// binary's pages), while a flood or a copy that were buffered would add
/// hundreds of MiB.
const DAEMON_GROWTH_KIB: u64 = 16 * 1024;

fn vm_rss_kib(pid: u32) -> u64 {
    procs::rss_kib(pid).unwrap_or(0)
}

/// Asserts the daemon grew by less than [`DAEMON_GROWTH_KIB`] over `base`.
fn assert_daemon_bounded(base: u64, peak: u64, during: &str) {
    assert!(
        peak < base + DAEMON_GROWTH_KIB,
        "bangerd grew by {} KiB during {during} (from {base} to {peak} KiB)",
        peak.saturating_sub(base)
    );
}

/// Samples a process's VmRSS every 50 ms until dropped; `peak()` is the
/// highest seen.
struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn watch(pid: u32) -> Self {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(vm_rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn exec(home: &TestHome, script: &str) -> String {
    home.ok(&["vm", "exec", "bb", "--", "sh", "-c", script])
}

async fn send<B>(socket: &Path, req: Request<B>) -> hyper::Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    sender.send_request(req).await.unwrap()
}

async fn get_json(socket: &Path, path: &str) -> (u16, serde_json::Value) {
    let req = Request::get(path)
        .header("host", "bangerd")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send(socket, req).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// A TCP connection to `port` in the guest through the daemon.
async fn tcp(socket: &Path, port: u16) -> TokioIo<hyper::upgrade::Upgraded> {
    let req = Request::post(format!("/v1/vms/bb/tcp?port={port}"))
        .header("host", "bangerd")
        .header("connection", "upgrade")
        .header("upgrade", "banger-tcp/1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut resp = send(socket, req).await;
    assert_eq!(resp.status().as_u16(), 101, "tcp upgrade refused");
    TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap())
}

/// Sends `data` on a fresh guest connection to the echo server,
/// half-closes, and returns everything that came back.
async fn echo(socket: PathBuf, data: Vec<u8>) -> Vec<u8> {
    let io = tcp(&socket, 7000).await;
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}

/// Deterministic, incompressible-enough content: every 8 bytes its offset.
fn pattern_file(path: &Path, bytes: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut off = 0u64;
    while off < bytes {
        f.write_all(&off.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes())
            .unwrap();
        off += 8;
    }
    f.flush().unwrap();
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            match fb.read(&mut bb[nb..na]).unwrap() {
                0 => return false,
                n => nb += n,
            }
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
    }
}

fn md5(path: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn guest_access_through_the_agent() {
    let Some(home) = boot_home() else { return };
    home.ok(&[
        "vm", "create", "busybox", "--name", "bb", "--cpus", "1", "--memory", "256M",
    ]);
    home.ok(&["vm", "start", "bb"]);
    let info = home.json(&["daemon", "status", "--json"]);
    let socket = PathBuf::from(info["socket"].as_str().unwrap());
    let daemon = u32::try_from(info["pid"].as_i64().unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // --- Flow control: a flood read one byte a second. ---
    let mut flood = home.banger_std();
    let mut flood = flood
        .args(["vm", "exec", "bb", "--", "cat", "/dev/zero"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon_base = vm_rss_kib(daemon);
    let daemon_rss = RssPeak::watch(daemon);
    let cli_rss = RssPeak::watch(flood.id());
    let t = Instant::now();
    let mut answers = Vec::new();
    let mut flood_out = flood.stdout.take().unwrap();
    let mut tick = 0;
    while t.elapsed() < Duration::from_secs(10) {
        // A client that reads one byte a second: the guest must be held
        // back all the way, not buffered for.
        std::thread::sleep(Duration::from_secs(1));
        let mut one = [1u8; 1];
        flood_out.read_exact(&mut one).unwrap();
        assert_eq!(one, [0]);
        tick += 1;
        if tick % 2 == 0 {
            // The same VM, the same agent connection: still answers at once.
            let q = Instant::now();
            assert_eq!(exec(&home, "echo alive"), "alive\n");
            answers.push(q.elapsed());
        }
    }
    let agent_rss: u64 = exec(&home, "grep VmRSS /proc/1/status")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "flood read a byte a second for 10 s: bangerd RSS {daemon_base} KiB, peak {} KiB, CLI {} KiB, \
         agent {agent_rss} KiB; execs meanwhile took {answers:?}",
        daemon_rss.peak(),
        cli_rss.peak()
    );
    assert_daemon_bounded(daemon_base, daemon_rss.peak(), "the flood");
    assert!(
        cli_rss.peak() < RSS_BOUND_KIB,
        "the CLI grew to {} KiB",
        cli_rss.peak()
    );
    assert!(agent_rss < 16 * 1024, "the agent grew to {agent_rss} KiB");
    assert!(
        answers.iter().all(|d| *d < Duration::from_secs(5)),
        "an exec beside the stalled one was slow: {answers:?}"
    );
    // Reading now still gets the stream (it was paused, not dropped).
    let mut some = vec![0u8; 1 << 20];
    flood_out.read_exact(&mut some).unwrap();
    assert!(some.iter().all(|b| *b == 0));
    flood.kill().unwrap();
    let _ = flood.wait();
    drop((daemon_rss, cli_rss));

    // --- Stats. ---
    let (status, stats) = rt.block_on(get_json(&socket, "/v1/vms/bb/stats"));
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["state"], "running", "{stats}");
    assert!(
        stats["vmm"]["rss_bytes"].as_u64().unwrap() > 10 << 20,
        "{stats}"
    );
    assert_eq!(stats["disk_files"].as_array().unwrap().len(), 2, "{stats}");
    let total = stats["guest"]["memory"]["total_bytes"].as_u64().unwrap();
    let used = stats["guest"]["memory"]["used_bytes"].as_u64().unwrap();
    assert!((150 << 20..=256 << 20).contains(&total), "{stats}");
    assert!(used > 0 && used < total, "{stats}");
    assert_eq!(stats["guest"]["cpus"], 1, "{stats}");
    assert!(stats["guest"]["uptime_ms"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["guest"]["cpu"]["user_ms"].as_u64().unwrap()
            + stats["guest"]["cpu"]["system_ms"].as_u64().unwrap()
            > 0
    );
    let disks = stats["guest"]["disks"].as_array().unwrap();
    for p in ["/", "/root"] {
        let d = disks
            .iter()
            .find(|d| d["path"] == p)
            .unwrap_or_else(|| panic!("{stats}"));
        assert!(d["total_bytes"].as_u64().unwrap() >= d["used_bytes"].as_u64().unwrap());
        assert!(d["total_bytes"].as_u64().unwrap() > 1 << 30, "{stats}");
    }

    // --- TCP through the agent, and ports. ---
    exec(
        &home,
        "busybox ln -sf busybox /bin/nc; nc -ll -p 7000 -e /bin/cat </dev/null >/dev/null 2>&1 &",
    );
    let listed = (0..50).find_map(|_| {
        let (status, ports) = rt.block_on(get_json(&socket, "/v1/vms/bb/ports"));
        assert_eq!(status, 200, "{ports}");
        let hit = ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == 7000)
            .cloned();
        if hit.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        hit
    });
    let p = listed.expect("the guest's nc server on 7000 is listed");
    assert!(p["proto"].as_str().unwrap().starts_with("tcp"), "{p}");
    assert_eq!(p["process"], "nc", "{p}");
    assert!(p["pid"].as_u64().unwrap() > 1, "{p}");

    let a: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..(600u32 << 10)).map(|i| (i % 13) as u8).collect();
    let (ra, rb) = rt.block_on(async {
        tokio::join!(
            echo(socket.clone(), a.clone()),
            echo(socket.clone(), b.clone())
        )
    });
    assert!(
        ra == a,
        "connection a echoed {} of {} bytes",
        ra.len(),
        a.len()
    );
    assert!(
        rb == b,
        "connection b echoed {} of {} bytes",
        rb.len(),
        b.len()
    );
    // Nothing listens on 7001: a plain error, before any upgrade.
    let refused = rt.block_on(async {
        let req = Request::post("/v1/vms/bb/tcp?port=7001")
            .header("host", "bangerd")
            .header("connection", "upgrade")
            .header("upgrade", "banger-tcp/1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send(&socket, req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(refused.0, 409, "{}", refused.1);
    assert!(refused.1.contains("7001"), "{}", refused.1);

    // --- Copy a tree in and out. ---
    let mib: u64 = std::env::var("BANGER_TEST_COPY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let src = home.path().join("src");
    let tree = src.join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("secret"), "secret\n").unwrap();
    std::fs::set_permissions(tree.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(tree.join("secret"), Some(1234), Some(5678)).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(tree.join("secret"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(tree.join("bin/suid"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        tree.join("bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("secret", tree.join("link")).unwrap();
    pattern_file(&tree.join("big"), mib << 20);
    let archive = home.path().join("in.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        b.follow_symlinks(false);
        b.append_dir_all("tree", &tree).unwrap();
        b.into_inner().unwrap().flush().unwrap();
    }

    let in_base = vm_rss_kib(daemon);
    let daemon_rss = RssPeak::watch(daemon);
    let t = Instant::now();
    let (status, report) = rt.block_on(async {
        let file = tokio::fs::File::open(&archive).await.unwrap();
        let chunks = futures_util::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 64 << 10];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(buf))), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let req = Request::put("/v1/vms/bb/files?path=/root/in")
            .header("host", "bangerd")
            .header("content-type", "application/x-tar")
            .body(StreamBody::new(chunks))
            .unwrap();
        let resp = send(&socket, req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    let took_in = t.elapsed();
    assert_eq!(status, 200, "{report}");
    let in_peak = daemon_rss.peak();
    drop(daemon_rss);

    let listing = exec(
        &home,
        "cd /root/in/tree && stat -c '%n %a %u %g %Y' secret bin/suid big && busybox readlink link \
         && busybox md5sum big",
    );
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[0], "secret 600 1234 5678 1000000000", "{listing}");
    assert!(lines[1].starts_with("bin/suid 4755 0 0 "), "{listing}");
    assert!(lines[2].starts_with("big 644 0 0 "), "{listing}");
    assert_eq!(lines[3], "secret", "{listing}");
    assert!(lines[4].starts_with(&md5(&tree.join("big"))), "{listing}");

    let out_base = vm_rss_kib(daemon);
    let daemon_rss = RssPeak::watch(daemon);
    let out_tar = home.path().join("out.tar");
    let t = Instant::now();
    rt.block_on(async {
        let req = Request::get("/v1/vms/bb/files?path=/root/in/tree")
            .header("host", "bangerd")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send(&socket, req).await;
        assert_eq!(resp.status().as_u16(), 200);
        let mut body = resp.into_body();
        let mut f = tokio::fs::File::create(&out_tar).await.unwrap();
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                f.write_all(data).await.unwrap();
            }
        }
        f.flush().await.unwrap();
    });
    let took_out = t.elapsed();
    let out_peak = daemon_rss.peak();
    drop(daemon_rss);
    let back = home.path().join("back");
    {
        let mut ar = tar::Archive::new(std::fs::File::open(&out_tar).unwrap());
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.unpack(&back).unwrap();
    }
    let back = back.join("tree");
    for f in ["secret", "bin/suid", "big"] {
        let (a, b) = (
            std::fs::metadata(tree.join(f)).unwrap(),
            std::fs::metadata(back.join(f)).unwrap(),
        );
        assert_eq!(
            (a.mode() & 0o7777, a.uid(), a.gid(), a.mtime()),
            (b.mode() & 0o7777, b.uid(), b.gid(), b.mtime()),
            "{f}"
        );
        assert!(
            same_bytes(&tree.join(f), &back.join(f)),
            "{f} differs after the round trip"
        );
    }
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        Path::new("secret")
    );
    let rate = |d: Duration| (mib as f64) / d.as_secs_f64();
    eprintln!(
        "copy of {mib} MiB: in {took_in:?} ({:.1} MiB/s, bangerd {in_base} KiB, peak {in_peak} KiB), \
         out {took_out:?} ({:.1} MiB/s, bangerd {out_base} KiB, peak {out_peak} KiB)",
        rate(took_in),
        rate(took_out)
    );
    assert_daemon_bounded(in_base, in_peak, "copy-in");
    assert_daemon_bounded(out_base, out_peak, "copy-out");

    // Errors name the path, as plain error answers.
    let (status, err) = rt.block_on(async {
        let req = Request::get("/v1/vms/bb/files?path=/no/such/path")
            .header("host", "bangerd")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send(&socket, req).await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(status, 409, "{err}");
    assert!(err.contains("/no/such/path"), "{err}");
}
