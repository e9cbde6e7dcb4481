//! Host networking end to end under QEMU, entirely inside network
//! namespaces this test creates: the daemon (root here, so in-process)
//! lives in namespace `host`, which plays the host; namespace `inet`,
//! joined by a veth pair, plays the internet with an HTTP server of the
//! test's own. No traffic leaves these namespaces.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with};

/// `banger vm exec VM -- ARGS`: (exit code, stdout + stderr).
fn exec(home: &TestHome, vm: &str, args: &[&str]) -> (i32, String) {
    let out = home
        .banger_std()
        .args(["vm", "exec", vm, "--"])
        .args(args)
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

fn in_ns(ns: &NetNs, program: &str, args: &[&str]) -> (bool, String) {
    let out = ns.command(program).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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

/// An HTTP server in `inet` that answers once per connection with the
/// peer address it saw, and reports that address on the channel.
fn peer_reporting_server(inet: &NetNs) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    inet.spawn(move || {
        let l = TcpListener::bind("10.200.0.2:8080").unwrap();
        ready_tx.send(()).unwrap();
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let peer = c.peer_addr().unwrap().ip().to_string();
            let mut buf = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read(&mut buf);
            let body = format!("seen {peer}\n");
            let _ = write!(
                c,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tx.send(peer);
        }
    });
    ready_rx.recv().unwrap();
    rx
}

#[test]
fn guests_reach_each_other_the_gateway_and_the_internet_by_nat_and_nothing_else() {
    let host = NetNs::new("host");
    let inet = NetNs::new("inet");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.200.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.200.0.2/24", "dev", "eth0"]);
    host.ip(&["route", "add", "default", "via", "10.200.0.2"]);
    let seen = peer_reporting_server(&inet);

    // Every upstream is the test's: nothing falls back to the host's resolvers.
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.30.0.1/24\"\n\
                  dns_upstreams = [\"10.200.0.2:53\"]\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    for vm in ["alpha", "beta"] {
        home.ok(&[
            "vm", "create", "busybox", "--name", vm, "--cpus", "1", "--memory", "256M",
        ]);
        let report = home.json(&["vm", "start", vm, "--json"]);
        assert_eq!(report["vm"]["desired_state"], "running", "{report}");
    }
    let ip = |vm: &str| {
        home.json(&["vm", "show", vm, "--json"])["guest_ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (alpha_ip, beta_ip) = (ip("alpha"), ip("beta"));
    assert_eq!(taps(&host).len(), 2, "one tap per running VM");

    // The guest pings its gateway, the bridge address.
    let (code, out) = exec(
        &home,
        "alpha",
        &["busybox", "ping", "-c1", "-W5", "172.30.0.1"],
    );
    assert_eq!(code, 0, "ping gateway: {out}");

    // Guests find each other by name through the daemon's DNS server.
    let (code, out) = exec(&home, "alpha", &["busybox", "nslookup", "beta.vm"]);
    assert_eq!(code, 0, "nslookup beta.vm: {out}");
    assert!(out.contains(&beta_ip), "beta.vm should be {beta_ip}: {out}");
    let (code, out) = exec(&home, "alpha", &["busybox", "ping", "-c1", "-W5", &beta_ip]);
    assert_eq!(code, 0, "ping beta: {out}");

    // The host resolves <name>.vm on the bridge address and reaches a
    // server in the guest.
    // From loopback here; publish.rs asks without -b (the kernel picks the
    // uplink's address), which the nft table, not an allow list, admits.
    let dig = |name: &str| {
        in_ns(
            &host,
            "dig",
            &["+short", "+time=3", "-b", "127.0.0.1", "@172.30.0.1", name],
        )
    };
    let (ok, out) = dig("beta.vm");
    assert!(ok && out.trim() == beta_ip, "dig beta.vm: {out}");
    let (code, out) = exec(
        &home,
        "beta",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello-from-beta > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www",
        ],
    );
    assert_eq!(code, 0, "httpd: {out}");
    let url = format!("http://{beta_ip}:8000/index.html");
    let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "10", &url]);
    assert!(ok && out.contains("hello-from-beta"), "curl {url}: {out}");

    // The internet through NAT: the server there sees the host's uplink
    // address, never the guest's.
    let (code, out) = exec(
        &home,
        "alpha",
        // busybox-static's wget crashes in static glibc's resolver; nc
        // speaks the request itself.
        &[
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 10.200.0.2 8080",
        ],
    );
    assert!(out.contains("seen 10.200.0.1"), "reply through NAT: {out}");
    assert_eq!(code, 0, "wget through NAT: {out}");
    let peer = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(peer, "10.200.0.1", "source address after NAT");
    assert_ne!(peer, alpha_ip);

    // The host's other services are unreachable from a guest.
    let (ltx, lrx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    host.spawn(move || {
        let l = TcpListener::bind("0.0.0.0:7777").unwrap();
        ready_tx.send(()).unwrap();
        if let Ok((_, peer)) = l.accept() {
            let _ = ltx.send(peer);
        }
    });
    ready_rx.recv().unwrap();
    let (code, out) = exec(
        &home,
        "alpha",
        &["sh", "-c", "echo x | busybox nc -w 3 172.30.0.1 7777"],
    );
    assert_ne!(
        code, 0,
        "a host port other than DNS answered a guest: {out}"
    );
    assert!(
        lrx.try_recv().is_err(),
        "the host listener accepted a guest"
    );

    // kill -9 of the daemon: the guests' network stays; the next daemon
    // re-adopts the taps and puts the DNS records back.
    home.kill_daemon();
    let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "10", &url]);
    assert!(
        ok && out.contains("hello-from-beta"),
        "guest server unreachable after the daemon died: {out}"
    );
    assert_eq!(taps(&host).len(), 2, "taps survive the daemon");
    home.ok(&["vm", "ls"]);
    assert_eq!(
        taps(&host).len(),
        2,
        "the new daemon kept the live VMs' taps"
    );
    let (ok, out) = dig("alpha.vm");
    assert!(ok && out.trim() == alpha_ip, "re-adopted record: {out}");

    // Stop and rm give everything back.
    home.ok(&["vm", "stop", "beta"]);
    assert_eq!(taps(&host).len(), 1, "stop removes the tap");
    let (ok, out) = dig("beta.vm");
    assert!(ok && out.trim().is_empty(), "beta.vm after stop: {out}");
    home.ok(&["vm", "rm", "--force", "alpha"]);
    home.ok(&["vm", "rm", "beta"]);
    assert!(
        taps(&host).is_empty(),
        "taps left after rm: {:?}",
        taps(&host)
    );
}
