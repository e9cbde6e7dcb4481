//! A real banger-helper process, started as root inside a network
//! namespace the test made, serving a test owner uid. Clients run as that
//! uid and as a third uid through `setpriv` (the helper binary's own
//! `call` subcommand), and as root through [`HelperClient`].

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use banger_helper::{HelperClient, HelperError, HostNetwork, InProcess, PROTOCOL_VERSION, Policy};
use banger_testkit::netns::NetNs;

const OWNER: u32 = 1234;
const STRANGER: u32 = 1235;
const BRIDGE: &str = "bangerh0";
const HELPER: &str = env!("CARGO_BIN_EXE_banger-helper");

struct Helper {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_helper(ns: &NetNs) -> Helper {
    banger_testkit::require_tool("setpriv", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    // Other uids must be able to reach the socket inside it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("helper.sock");
    let child = ns
        .command(HELPER)
        .args([
            "--owner",
            &OWNER.to_string(),
            "--bridge",
            BRIDGE,
            "--socket",
        ])
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
        _dir: dir,
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

#[test]
fn owner_is_served_strangers_and_foreign_names_are_refused() {
    let ns = NetNs::new("helper");
    let h = start_helper(&ns);

    let v = ok(&call_as(OWNER, &h.socket, r#"{"op":"version"}"#));
    assert_eq!(v["protocol"], PROTOCOL_VERSION);
    assert_eq!(v["owner"], OWNER);

    ok(&call_as(
        OWNER,
        &h.socket,
        &format!(r#"{{"op":"ensure_bridge","name":"{BRIDGE}","cidr":"10.214.0.1/24"}}"#),
    ));
    let tap = ok(&call_as(
        OWNER,
        &h.socket,
        &format!(r#"{{"op":"create_tap","vm_id":"00112233445566ff","bridge":"{BRIDGE}"}}"#),
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
    let taps = ok(&call_as(OWNER, &h.socket, r#"{"op":"list_taps"}"#));
    assert_eq!(taps["taps"], serde_json::json!(["bgt001122334455"]));
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

    // Rules and forwarding, as the owner, land in the helper's namespace.
    let rules = |port: u16| {
        format!(
            r#"{{"op":"apply_rules","rules":{{"bridge":"{BRIDGE}","cidr":"10.214.0.1/24","ports":[{{"proto":"tcp","host_ip":null,"host_port":{port},"guest_ip":"10.214.0.2","guest_port":80}}]}}}}"#
        )
    };
    ok(&call_as(OWNER, &h.socket, &rules(8080)));
    ok(&call_as(
        OWNER,
        &h.socket,
        &format!(r#"{{"op":"enable_forwarding","bridge":"{BRIDGE}"}}"#),
    ));
    let listed = ns
        .command("nft")
        .args(["list", "table", "inet", "banger"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("dnat ip to 10.214.0.2:80"));
    let fwd = ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    let st = ok(&call_as(
        OWNER,
        &h.socket,
        &format!(r#"{{"op":"status","bridge":"{BRIDGE}"}}"#),
    ));
    assert_eq!(
        st,
        serde_json::json!({"reply":"status","bridge":true,"rules":true,"forwarding":true})
    );
    let e = refused(&call_as(OWNER, &h.socket, &rules(22)));
    assert!(e.contains("below 1024"), "{e}");
    ok(&call_as(OWNER, &h.socket, r#"{"op":"remove_rules"}"#));
    let listed = ns
        .command("nft")
        .args(["list", "table", "inet", "banger"])
        .output()
        .unwrap();
    assert!(!listed.status.success(), "table left after remove_rules");

    // Interfaces that are not banger's, under every operation that names one.
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    for op in [
        r#"{"op":"remove_bridge","name":"eth0"}"#,
        r#"{"op":"ensure_bridge","name":"lo","cidr":"10.215.0.1/24"}"#,
        r#"{"op":"delete_tap","tap":"eth0"}"#,
        r#"{"op":"open_tap","tap":"lo"}"#,
        r#"{"op":"create_tap","vm_id":"00112233445566ff","bridge":"eth0"}"#,
        r#"{"op":"enable_forwarding","bridge":"lo"}"#,
        r#"{"op":"apply_rules","rules":{"bridge":"eth0","cidr":"10.214.0.1/24","ports":[]}}"#,
        r#"{"op":"bind_dns","addr":"127.0.0.1:53"}"#,
        r#"{"op":"run","command":"sh"}"#,
    ] {
        let e = refused(&call_as(OWNER, &h.socket, op));
        assert!(e.contains("refused"), "{op}: {e}");
    }
    ns.ip(&["link", "show", "eth0"]);

    // Any uid may connect (the socket is 0666, so the helper needs no
    // CAP_CHOWN), but SO_PEERCRED refuses a third uid with a clear error,
    // whatever it asks.
    let mode = std::fs::metadata(&h.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "socket mode");
    for op in [r#"{"op":"version"}"#, r#"{"op":"list_taps"}"#] {
        let e = refused(&call_as(STRANGER, &h.socket, op));
        assert!(
            e.contains(&format!("uid {STRANGER} may not use the banger helper")),
            "{e}"
        );
    }
    assert_eq!(
        taps_of(&ns),
        ["bgt001122334455"],
        "a refused stranger changed nothing"
    );

    ok(&call_as(
        OWNER,
        &h.socket,
        r#"{"op":"delete_tap","tap":"bgt001122334455"}"#,
    ));
    let taps = ok(&call_as(OWNER, &h.socket, r#"{"op":"list_taps"}"#));
    assert_eq!(taps["taps"], serde_json::json!([]));
}

#[test]
fn bind_dns_hands_over_usable_sockets_and_versions_are_checked() {
    let ns = NetNs::new("helperdns");
    let h = start_helper(&ns);
    let (client, info) = block_on(HelperClient::connect(&h.socket)).unwrap();
    assert_eq!(info.owner, OWNER);
    let dns = block_on(async {
        client
            .ensure_bridge(BRIDGE, "10.214.0.1/24".parse().unwrap())
            .await?;
        client.bind_dns("10.214.0.1:53".parse().unwrap()).await
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
fn in_process_applies_the_same_policy() {
    let ns = NetNs::new("inproc");
    let (tap, refused) = ns.in_thread(|| {
        block_on(async {
            let p = InProcess::new(Policy::new(None).unwrap(), 4321).unwrap();
            p.ensure_bridge("banger9", "10.216.0.1/24".parse().unwrap())
                .await
                .unwrap();
            let tap = p.create_tap("abcdefabcdef0123", "banger9").await.unwrap();
            let refused = p.remove_bridge("eth0").await;
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
