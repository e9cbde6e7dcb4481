//! Published ports (`-p`) and `--network none` end to end under QEMU,
//! inside network namespaces this test creates (`host`, playing the
//! host, with an uplink address of its own on a veth to a second, empty one). The daemon is root, so
//! it does the host networking in-process. No traffic leaves the namespace.
//!
//! One VM (`web`, a busybox httpd on guest port 8000) is published on
//! every host address and on 127.0.0.1 only; the test follows its rules
//! through a refused start (the host port held by another process),
//! stop, start, a kill -9 of the daemon and `vm rm`.

use std::net::TcpListener;
use std::process::Stdio;

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with};

const UPLINK: &str = "10.201.0.1";

fn in_ns(ns: &NetNs, program: &str, args: &[&str]) -> (bool, String) {
    let out = ns.command(program).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn curl(ns: &NetNs, url: &str) -> (bool, String) {
    in_ns(ns, "curl", &["-sS", "--max-time", "10", url])
}

fn taps(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("bgt"))
        .collect()
}

/// The published ports in banger's table: the elements of its port
/// maps (`HOST_PORT : GUEST . GUEST_PORT`), one per port.
fn dnat_rules(ns: &NetNs) -> Vec<String> {
    let (_, out) = in_ns(ns, "nft", &["-j", "list", "table", "inet", "banger"]);
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&out) else {
        return Vec::new();
    };
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("map"))
        .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("ports_")))
        .flat_map(|m| m["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.to_string())
        .collect()
}

fn exec(home: &TestHome, vm: &str, script: &str) -> (i32, String) {
    let out = home
        .banger_std()
        .args(["vm", "exec", vm, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn serve(home: &TestHome) {
    let (code, out) = exec(
        home,
        "web",
        "mkdir -p /tmp/www && echo hello-from-web > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www",
    );
    assert_eq!(code, 0, "httpd: {out}");
}

/// Every way in answers: the host's address, 127.0.0.1 on both rules.
fn assert_published(host: &NetNs, when: &str) {
    for url in [
        format!("http://{UPLINK}:8080/index.html"),
        "http://127.0.0.1:8080/index.html".to_string(),
        "http://127.0.0.1:8081/index.html".to_string(),
    ] {
        let (ok, out) = curl(host, &url);
        assert!(
            ok && out.contains("hello-from-web"),
            "{when}: curl {url}: {out}"
        );
    }
}

fn assert_unpublished(host: &NetNs, when: &str) {
    assert!(
        dnat_rules(host).is_empty(),
        "{when}: {:?}",
        dnat_rules(host)
    );
    let (ok, out) = curl(host, "http://127.0.0.1:8080/index.html");
    assert!(!ok, "{when}: port 8080 still answers: {out}");
}

fn ping(host: &NetNs, ip: &str) -> (bool, String) {
    in_ns(host, "ping", &["-c", "1", "-W", "5", ip])
}

#[test]
fn published_ports_follow_the_vm_through_stop_start_kill9_and_rm() {
    let host = NetNs::new("pub");
    // The host's uplink: a veth to a namespace with nothing behind it (this
    // kernel has no dummy links), only for an address of the host's own.
    let far = NetNs::new("pubfar");
    host.veth("up0", &far, "eth0");
    host.ip(&["addr", "add", &format!("{UPLINK}/24"), "dev", "up0"]);
    // Every upstream is the test's own (nothing answers there).
    let config = "[network]\nmode = \"auto\"\nbridge_cidr = \"172.31.0.1/24\"\n\
                  dns_upstreams = [\"127.0.0.1:9\"]\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };

    // Bad and conflicting specs are refused at create, leaving nothing.
    home.ok(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "web",
        "--cpus",
        "1",
        "--memory",
        "256M",
        "-p",
        "8080:8000",
        "-p",
        "127.0.0.1:8081:8000/tcp",
    ]);
    let e = home.fails(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "other",
        "-p",
        "127.0.0.1:8080:80",
    ]);
    assert!(
        e.contains("already published by vm web"),
        "conflict at create: {e}"
    );
    let e = home.fails(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "other",
        "-p",
        "9:9",
        "--network",
        "none",
    ]);
    assert!(e.contains("--network none"), "{e}");
    let vms = home.json(&["vm", "ls", "--json"]);
    assert_eq!(vms.as_array().unwrap().len(), 1, "{vms}");

    // A VM without a network says so, and shows no address.
    home.ok(&[
        "vm",
        "create",
        "busybox",
        "--name",
        "quiet",
        "--network",
        "none",
    ]);
    let show = home.ok(&["vm", "show", "quiet"]);
    assert!(
        show.contains("none: created with --network none") && !show.contains("172.31."),
        "{show}"
    );
    let ls = home.ok(&["vm", "ls"]);
    assert!(
        ls.contains("0.0.0.0:8080->8000/tcp, 127.0.0.1:8081->8000/tcp"),
        "{ls}"
    );

    // A host port held by another process: the start fails whole.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (released_tx, released_rx) = std::sync::mpsc::channel::<()>();
    host.spawn(move || {
        let l = TcpListener::bind("127.0.0.1:8080").unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
        drop(l);
        released_tx.send(()).unwrap();
    });
    held_rx.recv().unwrap();
    let e = home.fails(&["vm", "start", "web"]);
    assert!(
        e.contains("8080/tcp is in use"),
        "start with a held port: {e}"
    );
    assert!(taps(&host).is_empty(), "tap left: {:?}", taps(&host));
    assert!(dnat_rules(&host).is_empty(), "{:?}", dnat_rules(&host));
    assert_eq!(
        home.json(&["vm", "show", "web", "--json"])["desired_state"],
        "stopped"
    );
    release_tx.send(()).unwrap();
    released_rx.recv().unwrap();

    // Started: the port answers on the host's address and on 127.0.0.1.
    home.ok(&["vm", "start", "web"]);
    let ip = home.json(&["vm", "show", "web", "--json"])["guest_ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dnat_rules(&host).len(), 2, "{:?}", dnat_rules(&host));
    serve(&home);
    assert_published(&host, "after start");

    // vm ports lists the server with both URLs.
    let ports = home.json(&["vm", "ports", "web", "--json"]);
    let httpd = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 8000)
        .unwrap_or_else(|| panic!("httpd not listed: {ports}"));
    assert_eq!(httpd["url"], "http://web.vm:8000", "{httpd}");
    let hosts = httpd["host_urls"].to_string();
    assert!(
        hosts.contains("http://127.0.0.1:8080") && hosts.contains("http://127.0.0.1:8081"),
        "{httpd}"
    );
    let table = home.ok(&["vm", "ports", "web"]);
    assert!(
        table.contains("http://web.vm:8000 http://127.0.0.1:8080"),
        "{table}"
    );

    // The host pings the guest, and asks the DNS on the bridge address
    // from whichever of its addresses the kernel picks (the uplink's here).
    let (ok, out) = ping(&host, &ip);
    assert!(ok, "host -> guest ping: {out}");
    let (ok, out) = in_ns(
        &host,
        "dig",
        &["+short", "+time=3", "@172.31.0.1", "web.vm"],
    );
    assert!(ok && out.trim() == ip, "dig from the bridge address: {out}");

    // Stop removes the rules; start puts them back.
    home.ok(&["vm", "stop", "web"]);
    assert_unpublished(&host, "after stop");
    assert!(taps(&host).is_empty(), "{:?}", taps(&host));
    home.ok(&["vm", "start", "web"]);
    serve(&home);
    assert_published(&host, "after restart");

    // kill -9 of the daemon: the rules stay; the next daemon keeps them.
    home.kill_daemon();
    assert_published(&host, "daemon dead");
    let (ok, out) = ping(&host, &ip);
    assert!(ok, "host -> guest ping with the daemon dead: {out}");
    home.ok(&["vm", "ls"]);
    assert_eq!(dnat_rules(&host).len(), 2, "{:?}", dnat_rules(&host));
    assert_published(&host, "re-adopted");
    let (ok, out) = ping(&host, &ip);
    assert!(ok, "host -> guest ping after re-adopt: {out}");
    let (ok, out) = in_ns(
        &host,
        "dig",
        &["+short", "+time=3", "@172.31.0.1", "web.vm"],
    );
    assert!(ok && out.trim() == ip, "dig after re-adopt: {out}");

    // rm gives everything back.
    home.ok(&["vm", "rm", "--force", "web"]);
    home.ok(&["vm", "rm", "quiet"]);
    assert!(taps(&host).is_empty(), "taps left: {:?}", taps(&host));
    assert!(dnat_rules(&host).is_empty(), "{:?}", dnat_rules(&host));
}
