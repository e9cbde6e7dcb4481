//! Network trust end to end under QEMU, with three busybox VMs, inside
//! namespaces this test makes: `host` (the daemon, root, in-process host
//! networking) and `inet`, the test's own "internet" behind a veth, with a
//! DNS server (banger-dns) answering `internet.test` and HTTP servers on
//! two ports. One set of VMs serves every part, in order:
//!
//! - egress: `locked` (`--egress none`) reaches only banger's DNS; `listed`
//!   (`--egress internet.test:8080,web.vm:8000`) reaches only what its
//!   names resolved to, on those ports;
//! - spoofing: `locked` takes `web`'s address and announces it; the host
//!   and `listed` still reach `web`;
//! - repair: after `nft flush ruleset` the published port answers again
//!   and a guest is kept off the host's other ports again within 2 s;
//! - DNS: `locked` holding many TCP connections to the resolver does not
//!   stop the daemon serving `vm ls`, `vm stop` and `vm start`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home_with};

const GATEWAY: &str = "172.28.0.1";

/// `banger vm exec VM -- sh -c SCRIPT`: (exit code, stdout + stderr).
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

/// A line from `host:port` over plain TCP, from inside `vm` (busybox nc).
fn reach(home: &TestHome, vm: &str, host: &str, port: u16) -> (bool, String) {
    let (code, out) = exec(
        home,
        vm,
        &format!("echo hi | busybox nc -w 3 {host} {port}"),
    );
    (code == 0 && out.contains("from-"), out)
}

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

/// Answer every connection to `addr` in `ns` with `reply`.
fn serve(ns: &NetNs, addr: &str, reply: &'static str) {
    let l = ns.in_thread(|| TcpListener::bind(addr)).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 64];
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

/// The test's own upstream DNS in `inet`: `internet.test` is 10.200.0.2.
fn upstream_dns(inet: &NetNs) {
    let (ready_tx, ready_rx) = mpsc::channel();
    inet.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let records = banger_dns::DnsRecords::new("test").unwrap();
            records
                .upsert("internet", "10.200.0.2".parse().unwrap())
                .unwrap();
            let _server = banger_dns::DnsServer::bind(
                "10.200.0.2:53".parse().unwrap(),
                records,
                &banger_dns::ServeOptions::default(),
            )
            .await
            .unwrap();
            ready_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    ready_rx.recv().unwrap();
}

#[test]
fn egress_spoofing_repair_and_a_dns_flood() {
    let host = NetNs::new("trust");
    let inet = NetNs::new("trustnet");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.200.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.200.0.2/24", "dev", "eth0"]);
    host.ip(&["route", "add", "default", "via", "10.200.0.2"]);
    upstream_dns(&inet);
    serve(&inet, "10.200.0.2:8080", "from-internet-8080\n");
    serve(&inet, "10.200.0.2:8081", "from-internet-8081\n");

    let config = format!(
        "[network]\nmode = \"bridge\"\nbridge_cidr = \"{GATEWAY}/24\"\n\
         dns_upstreams = [\"10.200.0.2:53\"]\n"
    );
    let Some(home) = boot_home_with(TestHome::with_config(&config).in_netns(host.name())) else {
        return;
    };
    let create = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "vm", "create", "busybox", "--name", name, "--cpus", "1", "--memory", "256M",
        ];
        args.extend_from_slice(extra);
        home.ok(&args);
    };
    create("locked", &["--egress", "none"]);
    create("web", &["-p", "18080:8000"]);
    create("listed", &["--egress", "internet.test:8080,web.vm:8000"]);
    let show = home.ok(&["vm", "show", "listed"]);
    assert!(show.contains("internet.test:8080,web.vm:8000"), "{show}");
    for vm in ["locked", "web", "listed"] {
        home.ok(&["vm", "start", vm]);
    }
    let ip = |vm: &str| {
        home.json(&["vm", "show", vm, "--json"])["guest_ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let web_ip = ip("web");
    let (code, out) = exec(
        &home,
        "web",
        "mkdir -p /tmp/www && echo from-web > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www",
    );
    assert_eq!(code, 0, "httpd: {out}");
    let web_url = format!("http://{web_ip}:8000/index.html");

    // Egress none: not the internet, not another guest; DNS yes.
    let (ok, out) = reach(&home, "locked", "10.200.0.2", 8080);
    assert!(!ok, "egress none reached the internet: {out}");
    let (code, out) = exec(
        &home,
        "locked",
        &format!("busybox nc -w 3 {web_ip} 8000 </dev/null"),
    );
    assert_ne!(code, 0, "egress none reached a guest: {out}");
    let (code, out) = exec(&home, "locked", "busybox nslookup internet.test");
    assert!(
        code == 0 && out.contains("10.200.0.2"),
        "DNS for a none guest: {out}"
    );

    // The allow list: nothing before the names resolve, then only them.
    let (ok, out) = reach(&home, "listed", "10.200.0.2", 8080);
    assert!(!ok, "reached before internet.test resolved: {out}");
    let (code, out) = exec(&home, "listed", "busybox nslookup internet.test");
    assert!(code == 0 && out.contains("10.200.0.2"), "{out}");
    let (ok, out) = reach(&home, "listed", "10.200.0.2", 8080);
    assert!(ok, "internet.test:8080 after it resolved: {out}");
    let (ok, out) = reach(&home, "listed", "10.200.0.2", 8081);
    assert!(!ok, "a port the list does not name: {out}");
    let (code, out) = exec(&home, "listed", "busybox nslookup web.vm");
    assert!(code == 0 && out.contains(&web_ip), "{out}");
    let (code, out) = exec(
        &home,
        "listed",
        &format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {web_ip} 8000"),
    );
    assert!(
        code == 0 && out.contains("from-web"),
        "web.vm:8000 after it resolved: {out}"
    );

    // Spoofing: locked takes web's address and announces it.
    let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "5", &web_url]);
    assert!(ok && out.contains("from-web"), "{out}");
    let (code, out) = exec(
        &home,
        "locked",
        &format!(
            "busybox ip addr add {web_ip}/32 dev eth0 && busybox arping -U -c 2 -w 1 -I eth0 -s {web_ip} {web_ip}; busybox arping -A -c 2 -w 1 -I eth0 -s {web_ip} {web_ip}; true"
        ),
    );
    assert_eq!(code, 0, "{out}");
    let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "5", &web_url]);
    assert!(
        ok && out.contains("from-web"),
        "the host lost web to a spoofer: {out}"
    );
    let (code, out) = exec(
        &home,
        "listed",
        &format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {web_ip} 8000"),
    );
    assert!(
        code == 0 && out.contains("from-web"),
        "a guest lost web to a spoofer: {out}"
    );
    let web_mac = banger_core::network::mac_for(
        home.json(&["vm", "show", "web", "--json"])["id"]
            .as_str()
            .unwrap(),
    );
    let (_, neigh) = in_ns(&host, "ip", &["neigh", "show", &web_ip]);
    assert!(
        neigh.contains(&web_mac),
        "the host's ARP entry moved: {neigh}"
    );

    // Repair: flush everything; the published port answers again and
    // a guest is kept off the host's other ports again, within 2 s.
    let (ltx, lrx) = mpsc::channel();
    let l = host
        .in_thread(|| TcpListener::bind("0.0.0.0:7777"))
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let _ = ltx.send(c.peer_addr().ok());
        }
    });
    let (ok, out) = in_ns(&host, "nft", &["flush", "ruleset"]);
    assert!(ok, "{out}");
    let flushed = Instant::now();
    let published = "http://127.0.0.1:18080/index.html";
    loop {
        let (ok, out) = in_ns(&host, "curl", &["-sS", "--max-time", "1", published]);
        if ok && out.contains("from-web") {
            break;
        }
        assert!(
            flushed.elapsed() < Duration::from_secs(2),
            "not repaired in 2 s: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let repaired = flushed.elapsed();
    let (code, out) = exec(
        &home,
        "web",
        &format!("echo x | busybox nc -w 3 {GATEWAY} 7777"),
    );
    assert_ne!(
        code, 0,
        "a guest reached a host port after the repair: {out}"
    );
    assert!(
        lrx.try_recv().is_err(),
        "the host listener accepted a guest"
    );
    eprintln!("repaired {repaired:?} after the flush");

    // A DNS flood: many TCP connections to the resolver from one guest.
    let (code, out) = exec(
        &home,
        "locked",
        &format!(
            "for i in $(busybox seq 200); do busybox nc {GATEWAY} 53 </dev/zero >/dev/null 2>&1 & done; echo started"
        ),
    );
    assert!(code == 0 && out.contains("started"), "{out}");
    let t = Instant::now();
    home.ok(&["vm", "ls"]);
    home.ok(&["vm", "stop", "listed"]);
    home.ok(&["vm", "start", "listed"]);
    eprintln!("vm ls, stop and start during the flood: {:?}", t.elapsed());
    let (code, out) = exec(&home, "web", "busybox nslookup locked.vm");
    assert!(
        code == 0 && out.contains("Address"),
        "DNS still answers others: {out}"
    );

    for vm in ["locked", "web", "listed"] {
        home.ok(&["vm", "rm", "--force", vm]);
    }
}
