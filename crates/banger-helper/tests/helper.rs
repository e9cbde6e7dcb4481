//! A real banger-helper process, started as root inside a network
//! namespace the test made, serving a test owner uid. Clients run as that
//! uid and as a third uid through `setpriv` (the helper binary's own
//! `call` subcommand), and as root through [`HelperClient`].
//!
//! The owner is the attacker here: each request that names a foreign
//! network, lies about a guest, targets an address outside the guest
//! network or a port another uid holds is refused, and the namespace
//! (links, addresses, routes, the whole nft ruleset, forwarding) is the
//! same after it as before.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use banger_helper::{
    GuestSpec, HelperClient, HelperError, HostNetwork, InProcess, PROTOCOL_VERSION, Policy,
    PolicyFile, TableState,
};
use banger_testkit::netns::NetNs;

const OWNER: u32 = 1234;
const STRANGER: u32 = 1235;
const BRIDGE: &str = "bangerh0";
const HELPER: &str = env!("CARGO_BIN_EXE_banger-helper");

struct Helper {
    child: Child,
    socket: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Helper {
    /// Stop the helper (as a crash would), keeping its directory.
    fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("the directory")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CIDR: &str = "10.214.0.1/24";

fn start_helper(ns: &NetNs) -> Helper {
    start_helper_with(ns, tempfile::tempdir().unwrap(), BRIDGE, CIDR)
}

/// The helper with this bridge and network, its socket and state file
/// in `dir` (kept across a restart when the same `dir` is given again).
fn start_helper_with(ns: &NetNs, dir: tempfile::TempDir, bridge: &str, cidr: &str) -> Helper {
    banger_testkit::require_tool("setpriv", "util-linux");
    // Other uids must be able to reach the socket inside it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("helper.sock");
    let _ = std::fs::remove_file(&socket);
    // An empty policy file of root's: the test's flags are the policy,
    // whatever the machine's /etc/banger/helper.toml says.
    let config = dir.path().join("helper.toml");
    std::fs::write(&config, "").unwrap();
    let child = ns
        .command(HELPER)
        .args([
            "--owner",
            &OWNER.to_string(),
            "--bridge",
            bridge,
            "--cidr",
            cidr,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--state")
        .arg(dir.path().join("state.json"))
        .arg("--socket")
        .arg(&socket)
        .env("BANGER_LOG", "warn")
        .spawn()
        .expect("start banger-helper");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "banger-helper did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Helper {
        child,
        socket,
        dir: Some(dir),
    }
}

/// `banger-helper call OP` as `uid`.
fn call_as(uid: u32, socket: &Path, op: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
            HELPER,
            "call",
            "--socket",
        ])
        .arg(socket)
        .arg(op)
        .output()
        .expect("run setpriv")
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    serde_json::from_str(&first).expect("reply JSON")
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "call succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The banger taps in `ns`, as the kernel lists them.
fn taps_of(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("bgt"))
        .map(str::to_owned)
        .collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Everything an owner's request could change in `ns`: links (kind, MAC,
/// flags, master), addresses, routes of every table, the whole nft
/// ruleset, IPv4 forwarding.
fn snapshot(ns: &NetNs) -> String {
    let out = |prog: &str, args: &[&str]| {
        let o = ns.command(prog).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    [
        out("ip", &["-d", "-o", "link", "show"]),
        out("ip", &["-o", "addr", "show"]),
        out("ip", &["route", "show", "table", "all"]),
        out("nft", &["list", "ruleset"]),
        out("cat", &["/proc/sys/net/ipv4/ip_forward"]),
    ]
    .join("\n---\n")
    .lines()
    // Address lifetimes and bridge timers move on their own.
    .filter(|l| !l.contains("valid_lft"))
    .map(|l| {
        l.split_whitespace()
            .scan(false, |timer, w| {
                let skip = std::mem::replace(timer, w.ends_with("_timer"));
                Some((!skip).then_some(w))
            })
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// A guest creation request as JSON.
fn create_tap(vm_id: &str, ip: &str, mac: &str, ports: &str) -> String {
    format!(
        r#"{{"op":"create_tap","vm_id":"{vm_id}","ip":"{ip}","mac":"{mac}","ports":[{ports}]}}"#
    )
}

fn tcp_port(host_ip: &str, host_port: u16) -> String {
    let ip = if host_ip.is_empty() {
        "null".to_string()
    } else {
        format!("\"{host_ip}\"")
    };
    format!(r#"{{"proto":"tcp","host_ip":{ip},"host_port":{host_port},"guest_port":80}}"#)
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_owner_is_served_within_the_policy_and_every_attack_changes_nothing() {
    let ns = NetNs::new("helper");
    // The host's LAN, with a router, and a Docker-style bridge of its own.
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "lan0"]);
    ns.ip(&["link", "set", "lan0", "up"]);
    ns.ip(&["link", "set", "lan1", "up"]);
    ns.ip(&["link", "add", "docker0", "type", "bridge"]);
    ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    ns.ip(&["link", "set", "docker0", "up"]);
    let h = start_helper(&ns);

    let v = ok(&call_as(OWNER, &h.socket, r#"{"op":"version"}"#));
    assert_eq!(v["protocol"], PROTOCOL_VERSION);
    assert_eq!(v["owner"], OWNER);
    assert_eq!(v["network"]["cidr"], CIDR);

    // Before the network is up, nothing may be bound to it.
    let before = snapshot(&ns);
    let e = refused(&call_as(
        OWNER,
        &h.socket,
        &create_tap("00112233445566ff", "10.214.0.2", "02:00:00:00:00:02", ""),
    ));
    assert!(e.contains("ensure_network first"), "{e}");
    assert_eq!(
        snapshot(&ns),
        before,
        "a refused create_tap changed the host"
    );

    ok(&call_as(OWNER, &h.socket, r#"{"op":"ensure_network"}"#));
    let tap = ok(&call_as(
        OWNER,
        &h.socket,
        &create_tap(
            "00112233445566ff",
            "10.214.0.2",
            "02:00:00:00:00:02",
            &tcp_port("", 18081),
        ),
    ));
    assert_eq!(tap["tap"], "bgt001122334455");
    let owner = ns
        .command("cat")
        .arg("/sys/class/net/bgt001122334455/owner")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&owner.stdout).trim(),
        OWNER.to_string()
    );
    let opened = call_as(
        OWNER,
        &h.socket,
        r#"{"op":"open_tap","tap":"bgt001122334455"}"#,
    );
    assert_eq!(ok(&opened)["reply"], "tap_fd");
    assert!(
        String::from_utf8_lossy(&opened.stdout).contains("fd: /dev/net/tun"),
        "no tap descriptor handed over: {}",
        String::from_utf8_lossy(&opened.stdout)
    );
    // The published port targets the tap's own address, and the helper
    // holds it: nobody else can bind it while it is published.
    let ruleset = snapshot(&ns);
    assert!(ruleset.contains("18081 : 10.214.0.2 . 80"), "{ruleset}");
    assert!(
        ruleset.contains("\"bgt001122334455\" . 02:00:00:00:00:02 . 10.214.0.2"),
        "the tap is bound to its MAC and address: {ruleset}"
    );
    let st = ok(&call_as(OWNER, &h.socket, r#"{"op":"status"}"#));
    assert_eq!(st["tables"]["state"], "matches", "{st}");
    assert_eq!(st["forwarding"], true);
    let grab = ns
        .command("setpriv")
        .args([
            &format!("--reuid={STRANGER}"),
            &format!("--regid={STRANGER}"),
            "--clear-groups",
            "busybox",
            "nc",
            "-l",
            "-p",
            "18081",
            "-w",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&grab.stderr).contains("in use"),
        "another uid bound a published port: {grab:?}"
    );

    // Another uid's listener on port 18080.
    let mut listener = Reaped(
        ns.command("setpriv")
            .args([
                &format!("--reuid={STRANGER}"),
                &format!("--regid={STRANGER}"),
                "--clear-groups",
                "busybox",
                "nc",
                "-l",
                "-p",
                "18080",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("the other uid's listener", || {
        ns.in_thread(|| {
            banger_net::host_ports::holder(banger_net::Proto::Tcp, None, 18080).is_some()
        })
    });

    // Attacks, each refused with nothing changed.
    let before = snapshot(&ns);
    let attacks = [
        // A foreign network (the v1 request that made 1.1.1.1 local).
        (r#"{"op":"ensure_bridge","name":"banger9","cidr":"1.1.1.1/32"}"#.to_string(), "unknown variant"),
        (r#"{"op":"ensure_network","cidr":"1.1.1.1/32"}"#.to_string(), "unknown field"),
        (r#"{"op":"ensure_network","bridge":"docker0"}"#.to_string(), "unknown field"),
        // A lying network: a guest address on the LAN (the router), on
        // Docker's bridge, the gateway itself, the broadcast address.
        (create_tap("6600112233445566", "10.77.0.254", "02:00:00:00:00:03", ""), "not a guest address"),
        (create_tap("6600112233445566", "172.17.0.2", "02:00:00:00:00:03", ""), "not a guest address"),
        (create_tap("6600112233445566", "10.214.0.1", "02:00:00:00:00:03", ""), "not a guest address"),
        (create_tap("6600112233445566", "10.214.0.255", "02:00:00:00:00:03", ""), "not a guest address"),
        // A target the request names is not a field at all.
        (r#"{"op":"create_tap","vm_id":"6600112233445566","ip":"10.214.0.3","mac":"02:00:00:00:00:03","ports":[{"proto":"tcp","host_port":18082,"guest_port":80,"guest_ip":"10.77.0.254"}]}"#.to_string(), "unknown field"),
        // Another guest's address or MAC, a broadcast MAC.
        (create_tap("6600112233445566", "10.214.0.2", "02:00:00:00:00:03", ""), "bound to tap bgt001122334455"),
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:02", ""), "MAC of tap"),
        (create_tap("6600112233445566", "10.214.0.3", "ff:ff:ff:ff:ff:ff", ""), "not unicast"),
        // Ports: below 1024, another uid's, another guest's.
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:03", &tcp_port("", 22)), "below 1024"),
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:03", &tcp_port("", 18080)), "in use"),
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:03", &tcp_port("127.0.0.1", 18080)), "in use"),
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:03", &tcp_port("127.0.0.1", 18081)), "published by tap"),
        // A port on an address that is not the host's.
        (create_tap("6600112233445566", "10.214.0.3", "02:00:00:00:00:03", &tcp_port("10.77.0.254", 18083)), "not an address of this host"),
        // Names that are not banger's, commands.
        (r#"{"op":"delete_tap","tap":"lan0"}"#.to_string(), "not a banger tap"),
        (r#"{"op":"open_tap","tap":"docker0"}"#.to_string(), "not a banger tap"),
        (r#"{"op":"bind_dns","addr":"127.0.0.1:53"}"#.to_string(), "unknown field"),
        (r#"{"op":"run","command":"sh"}"#.to_string(), "unknown variant"),
    ];
    for (op, want) in &attacks {
        let e = refused(&call_as(OWNER, &h.socket, op));
        assert!(e.contains(want), "{op}: expected {want:?} in {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(!e.contains("banger-helper: banger-helper"), "{e}");
        assert_eq!(snapshot(&ns), before, "{op} changed the host");
    }

    // The other uid's listener still gets its own connections.
    ns.in_thread(|| {
        let mut c = TcpStream::connect("127.0.0.1:18080").unwrap();
        c.write_all(b"still mine\n").unwrap();
    });
    let out = listener.0.wait_with_output_timeout();
    assert!(out.contains("still mine"), "the listener got: {out:?}");

    // A third uid is refused whatever it asks; the socket is 0666 because
    // SO_PEERCRED, not the file mode, decides.
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "socket mode");
    for op in [
        r#"{"op":"version"}"#,
        r#"{"op":"list_taps"}"#,
        r#"{"op":"remove_network"}"#,
    ] {
        let e = refused(&call_as(STRANGER, &h.socket, op));
        assert!(
            e.contains(&format!("uid {STRANGER} may not use the banger helper")),
            "{e}"
        );
    }
    assert_eq!(snapshot(&ns), before, "a refused stranger changed nothing");

    // Docker's bridge is as it was; delete and remove put forwarding back.
    ok(&call_as(
        OWNER,
        &h.socket,
        r#"{"op":"delete_tap","tap":"bgt001122334455"}"#,
    ));
    assert!(taps_of(&ns).is_empty());
    ok(&call_as(OWNER, &h.socket, r#"{"op":"remove_network"}"#));
    let fwd = ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fwd.stdout).trim(),
        "0",
        "forwarding put back"
    );
    let addr = ns.ip(&["-o", "addr", "show", "docker0"]);
    assert!(String::from_utf8_lossy(&addr.stdout).contains("172.17.0.1/16"));
}

/// A child killed on drop, so a failing test leaves no listener behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read a child's stdout until it exits (busybox nc -l exits after its
/// one connection closes), with a bound.
trait WaitOutput {
    fn wait_with_output_timeout(&mut self) -> String;
}

impl WaitOutput for Child {
    fn wait_with_output_timeout(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(_status) = self.try_wait().unwrap() {
                let mut s = String::new();
                if let Some(mut out) = self.stdout.take() {
                    std::io::Read::read_to_string(&mut out, &mut s).unwrap();
                }
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_bridge_banger_did_not_make_is_refused_and_left_alone() {
    let ns = NetNs::new("helperfb");
    // A Docker-style bridge that happens to have the configured name.
    ns.ip(&["link", "add", "br-host", "type", "bridge"]);
    ns.ip(&["addr", "add", "10.214.0.1/24", "dev", "br-host"]);
    ns.ip(&["link", "set", "br-host", "up"]);
    let h = start_helper_with(&ns, tempfile::tempdir().unwrap(), "br-host", CIDR);
    let before = snapshot(&ns);
    let e = refused(&call_as(OWNER, &h.socket, r#"{"op":"ensure_network"}"#));
    assert!(e.contains("banger did not create"), "{e}");
    assert_eq!(snapshot(&ns), before, "the foreign bridge was touched");
}

#[test]
fn bind_dns_hands_over_usable_sockets_and_versions_are_checked() {
    let ns = NetNs::new("helperdns");
    let h = start_helper(&ns);
    let (client, info) = block_on(HelperClient::connect(&h.socket)).unwrap();
    assert_eq!(info.owner, OWNER);
    let dns = block_on(async {
        client.ensure_network().await?;
        client.bind_dns().await
    })
    .unwrap();
    assert_eq!(dns.udp.local_addr().unwrap().to_string(), "10.214.0.1:53");
    assert_eq!(dns.tcp.local_addr().unwrap().to_string(), "10.214.0.1:53");

    // The sockets live in the helper's namespace: traffic sent there
    // reaches this process through them.
    ns.in_thread(|| {
        let s = UdpSocket::bind("10.214.0.1:0").unwrap();
        s.send_to(b"ping", "10.214.0.1:53").unwrap();
        let mut c = TcpStream::connect("10.214.0.1:53").unwrap();
        c.write_all(b"tcp").unwrap();
    });
    dns.udp
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = dns.udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    let (mut conn, _) = dns.tcp.accept().unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
    assert_eq!(got, "tcp");

    // A request of another protocol version is answered with a version
    // error, which the client turns into a clear message.
    let mut raw = UnixStream::connect(&h.socket).unwrap();
    raw.write_all(b"{\"protocol\":999,\"op\":{\"op\":\"version\"}}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(&raw).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["err"]["kind"], "version_mismatch", "{line}");
    assert_eq!(v["err"]["protocol"], PROTOCOL_VERSION);
    let e = HelperError::VersionMismatch {
        helper: 2,
        client: 1,
    };
    assert!(e.to_string().contains("restart the helper"), "{e}");

    // A helper that is not running: a one-line error naming the socket.
    let gone = block_on(HelperClient::connect(Path::new("/nonexistent/helper.sock")));
    let e = gone.unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/helper.sock") && e.contains("is it running"),
        "{e}"
    );
}

#[test]
fn a_restarted_helper_keeps_its_guests_ports_and_tables() {
    let ns = NetNs::new("helperrs");
    let h = start_helper_with(&ns, tempfile::tempdir().unwrap(), BRIDGE, CIDR);
    ok(&call_as(OWNER, &h.socket, r#"{"op":"ensure_network"}"#));
    ok(&call_as(
        OWNER,
        &h.socket,
        &create_tap(
            "00112233445566ff",
            "10.214.0.2",
            "02:00:00:00:00:02",
            &tcp_port("", 18090),
        ),
    ));
    // Killed: the port is free until a helper holds it again.
    let dir = h.kill();
    ns.in_thread(|| drop(std::net::TcpListener::bind("0.0.0.0:18090").unwrap()));
    // Same directory: same state file.
    let again = start_helper_with(&ns, dir, BRIDGE, CIDR);
    let st = ok(&call_as(OWNER, &again.socket, r#"{"op":"status"}"#));
    assert_eq!(st["guests"], 1, "{st}");
    assert_eq!(st["tables"]["state"], "matches", "{st}");
    wait_until("the port held again", || {
        ns.in_thread(|| std::net::TcpListener::bind("0.0.0.0:18090").is_err())
    });
    // The same binding again is a no-op; another address for the tap is
    // an update, refused where it collides.
    ok(&call_as(
        OWNER,
        &again.socket,
        &create_tap(
            "00112233445566ff",
            "10.214.0.2",
            "02:00:00:00:00:02",
            &tcp_port("", 18090),
        ),
    ));
}

#[test]
fn changes_by_anyone_else_are_repaired_within_two_seconds() {
    let ns = NetNs::new("helperfix");
    let h = start_helper(&ns);
    ok(&call_as(OWNER, &h.socket, r#"{"op":"ensure_network"}"#));
    ok(&call_as(
        OWNER,
        &h.socket,
        &create_tap(
            "00112233445566ff",
            "10.214.0.2",
            "02:00:00:00:00:02",
            &tcp_port("", 18091),
        ),
    ));
    let want = snapshot(&ns);
    for (what, script) in [
        ("flush ruleset", "flush ruleset"),
        ("a deleted chain", "delete chain bridge banger prerouting"),
        (
            "a deleted element",
            "delete element bridge banger guests { \"bgt001122334455\" . 02:00:00:00:00:02 . 10.214.0.2 }",
        ),
        ("an added rule", "add rule inet banger forward accept"),
    ] {
        let out = ns.command("nft").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        wait_until(what, || {
            let st = ok(&call_as(0, &h.socket, r#"{"op":"status"}"#));
            st["tables"]["state"] == "matches"
        });
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{what}: repaired after {:?}",
            t.elapsed()
        );
        assert_eq!(snapshot(&ns), want, "{what}: not restored as it was");
    }
    let st = ok(&call_as(OWNER, &h.socket, r#"{"op":"status"}"#));
    assert_eq!(st["repairs"], 4, "{st}");
}

#[test]
fn in_process_applies_the_same_policy() {
    let ns = NetNs::new("inproc");
    let (tap, refused) = ns.in_thread(|| {
        block_on(async {
            let policy = Policy::new(&PolicyFile {
                bridge: "banger9".into(),
                bridge_cidr: "10.216.0.1/24".parse().unwrap(),
                ..PolicyFile::default()
            })
            .unwrap();
            let p = InProcess::start(policy, 4321, None).await.unwrap();
            p.ensure_network().await.unwrap();
            let mut guest = GuestSpec {
                vm_id: "abcdefabcdef0123".into(),
                ip: "10.216.0.2".parse().unwrap(),
                mac: "02:ab:cd:ef:ab:cd".parse().unwrap(),
                egress: Default::default(),
                ports: vec![],
            };
            let tap = p.create_tap(&guest).await.unwrap();
            guest.vm_id = "abcdefabcdef0124".into();
            guest.ip = "8.8.8.8".parse().unwrap();
            let refused = p.create_tap(&guest).await;
            let st = p.status().await.unwrap();
            assert_eq!(st.tables, TableState::Matches);
            (tap, refused)
        })
    });
    assert_eq!(tap.as_str(), "bgtabcdefabcdef");
    let owner = ns
        .command("cat")
        .arg(format!("/sys/class/net/{tap}/owner"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "4321");
    assert!(
        matches!(refused, Err(HelperError::Refused(_))),
        "{refused:?}"
    );
}
