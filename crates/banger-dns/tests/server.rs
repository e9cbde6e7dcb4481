//! The DNS server on loopback, queried with the real `dig` and with
//! hickory's client. Upstreams are other banger-dns servers of the test's
//! own on other loopback ports: no test sends a query off the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use banger_dns::{DnsRecords, DnsServer, ServeOptions};
use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// What `dig` saw: the status word, the flags and the answer data.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: String,
    answers: Vec<String>,
}

fn dig(server: SocketAddr, name: &str, rtype: &str, tcp: bool) -> Dig {
    let dig = banger_testkit::require_tool("dig", "dnsutils");
    let mut cmd = Command::new(dig);
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+time=5", "+tries=1", "+noall", "+comments", "+answer"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.args([name, rtype]).output().expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {name} {rtype} failed: {text}");
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output: {text}"))
        .to_owned();
    let flags = text
        .split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().last().unwrap_or_default().to_owned())
        .collect();
    Dig {
        status,
        flags,
        answers,
    }
}

/// Runs `dig` off the runtime's threads: the server under test answers on them.
async fn dig_async(server: SocketAddr, name: &str, rtype: &str, tcp: bool) -> Dig {
    let (name, rtype) = (name.to_owned(), rtype.to_owned());
    tokio::task::spawn_blocking(move || dig(server, &name, &rtype, tcp))
        .await
        .unwrap()
}

/// An upstream of the test's own: a zone `example.test` with one name.
async fn upstream() -> DnsServer {
    let records = DnsRecords::new("example.test").unwrap();
    records.upsert("www", Ipv4Addr::new(10, 1, 2, 3)).unwrap();
    DnsServer::bind(LOOPBACK, records, &ServeOptions::default())
        .await
        .unwrap()
}

fn forward_to(upstreams: &[SocketAddr]) -> ServeOptions {
    ServeOptions {
        upstreams: upstreams.to_vec(),
        ..ServeOptions::default()
    }
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, handle) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), handle);
    tokio::spawn(bg);
    client
}

/// (response code, A addresses) for one query through hickory's client.
async fn query(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
) -> (ResponseCode, Vec<Ipv4Addr>) {
    let response = client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, RecordType::A)
        .await
        .unwrap_or_else(|e| panic!("query {name}: {e}"));
    let ips = response
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (response.metadata.response_code, ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_vm_names_and_forwards_the_rest() {
    let up = upstream().await;
    let records = DnsRecords::new("vm").unwrap();
    records.upsert("web", Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    let server = DnsServer::bind(LOOPBACK, records.clone(), &forward_to(&[up.udp_addr()]))
        .await
        .unwrap();
    let addr = server.udp_addr();
    assert_eq!(server.tcp_addr(), Some(addr), "TCP on the same port as UDP");

    let web = dig_async(addr, "web.vm", "A", false).await;
    assert_eq!(web.status, "NOERROR", "{web:?}");
    assert_eq!(web.answers, ["172.16.0.2"], "{web:?}");
    assert!(
        web.flags.split_whitespace().any(|f| f == "aa"),
        "authoritative: {web:?}"
    );
    assert_eq!(
        dig_async(addr, "WEB.Vm.", "A", false).await.answers,
        ["172.16.0.2"]
    );

    let aaaa = dig_async(addr, "web.vm", "AAAA", false).await;
    assert_eq!(
        (aaaa.status.as_str(), aaaa.answers.len()),
        ("NOERROR", 0),
        "{aaaa:?}"
    );
    let unknown = dig_async(addr, "nope.vm", "A", false).await;
    assert_eq!(unknown.status, "NXDOMAIN", "{unknown:?}");
    let unknown6 = dig_async(addr, "nope.vm", "AAAA", false).await;
    assert_eq!(unknown6.status, "NXDOMAIN", "{unknown6:?}");

    // Forwarded to the test's upstream, answer and NXDOMAIN alike.
    let fwd = dig_async(addr, "www.example.test", "A", false).await;
    assert_eq!(
        (fwd.status.as_str(), fwd.answers.clone()),
        ("NOERROR", vec!["10.1.2.3".into()]),
        "{fwd:?}"
    );
    assert!(
        fwd.flags.split_whitespace().any(|f| f == "ra"),
        "recursion available: {fwd:?}"
    );
    let fwd_nx = dig_async(addr, "missing.example.test", "A", false).await;
    assert_eq!(fwd_nx.status, "NXDOMAIN", "{fwd_nx:?}");

    // TCP answers the same.
    let tcp = dig_async(addr, "web.vm", "A", true).await;
    assert_eq!(tcp.answers, ["172.16.0.2"], "{tcp:?}");
    let tcp_fwd = dig_async(addr, "www.example.test", "A", true).await;
    assert_eq!(tcp_fwd.answers, ["10.1.2.3"], "{tcp_fwd:?}");

    // Changes at run time show at once, through any clone of the handle.
    server
        .records()
        .upsert("db", Ipv4Addr::new(172, 16, 0, 3))
        .unwrap();
    assert_eq!(
        dig_async(addr, "db.vm", "A", false).await.answers,
        ["172.16.0.3"]
    );
    records.upsert("web", Ipv4Addr::new(172, 16, 0, 4)).unwrap();
    assert_eq!(
        dig_async(addr, "web.vm", "A", false).await.answers,
        ["172.16.0.4"]
    );
    assert!(records.remove("web").unwrap());
    assert_eq!(
        dig_async(addr, "web.vm", "A", false).await.status,
        "NXDOMAIN"
    );

    // hickory's own client, over UDP and TCP.
    let mut udp = udp_client(addr).await;
    assert_eq!(
        query(&mut udp, "db.vm.").await,
        (ResponseCode::NoError, vec![Ipv4Addr::new(172, 16, 0, 3)])
    );
    assert_eq!(
        query(&mut udp, "web.vm.").await,
        (ResponseCode::NXDomain, vec![])
    );
    assert_eq!(
        query(&mut udp, "www.example.test.").await,
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 1, 2, 3)])
    );
    let mut tcp = tcp_client(addr).await;
    assert_eq!(
        query(&mut tcp, "db.vm.").await,
        (ResponseCode::NoError, vec![Ipv4Addr::new(172, 16, 0, 3)])
    );

    server.shutdown().await.unwrap();
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_sockets_handed_over() {
    // What the root helper does for port 53 on the bridge, on loopback.
    let udp = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let port = udp.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    let records = DnsRecords::new("vm").unwrap();
    records.upsert("a", Ipv4Addr::new(172, 16, 0, 9)).unwrap();
    let server = DnsServer::from_std(udp, Some(tcp), records, &ServeOptions::default()).unwrap();
    let addr = server.udp_addr();
    assert_eq!(addr.port(), port);

    let mut udp = udp_client(addr).await;
    assert_eq!(
        query(&mut udp, "a.vm.").await,
        (ResponseCode::NoError, vec![Ipv4Addr::new(172, 16, 0, 9)])
    );
    let mut tcp = tcp_client(addr).await;
    assert_eq!(
        query(&mut tcp, "a.vm.").await,
        (ResponseCode::NoError, vec![Ipv4Addr::new(172, 16, 0, 9)])
    );

    // With no upstream, names outside the zone are refused, not guessed.
    let other = dig_async(addr, "www.example.test", "A", false).await;
    assert_eq!(other.status, "REFUSED", "{other:?}");

    // UDP only (what BindDns hands over) is enough.
    let udp_only = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let server2 = DnsServer::from_std(
        udp_only,
        None,
        server.records().clone(),
        &ServeOptions::default(),
    )
    .unwrap();
    assert_eq!(server2.tcp_addr(), None);
    let mut c = udp_client(server2.udp_addr()).await;
    assert_eq!(
        query(&mut c, "a.vm.").await.1,
        vec![Ipv4Addr::new(172, 16, 0, 9)]
    );
    drop(server2);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error_and_self_is_no_upstream() {
    let first = DnsServer::bind(
        LOOPBACK,
        DnsRecords::new("vm").unwrap(),
        &ServeOptions::default(),
    )
    .await
    .unwrap();
    let err = DnsServer::bind(
        first.udp_addr(),
        DnsRecords::new("vm").unwrap(),
        &ServeOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("bind DNS UDP socket on {}", first.udp_addr())),
        "{err}"
    );

    // A server listed as its own upstream would loop; it is left out, so
    // the query is refused at once instead of timing out.
    let udp = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let own = udp.local_addr().unwrap();
    let server = DnsServer::from_std(
        udp,
        None,
        DnsRecords::new("vm").unwrap(),
        &forward_to(&[own]),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let other = dig_async(own, "www.example.test", "A", false).await;
    assert_eq!(other.status, "REFUSED", "{other:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_answering() {
    let server = DnsServer::bind(
        LOOPBACK,
        DnsRecords::new("vm").unwrap(),
        &ServeOptions::default(),
    )
    .await
    .unwrap();
    let addr = server.udp_addr();
    assert_eq!(dig_async(addr, "x.vm", "A", false).await.status, "NXDOMAIN");
    drop(server);
    // The port is free again once the tasks are gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let again = loop {
        let bound = DnsServer::bind(
            addr,
            DnsRecords::new("vm").unwrap(),
            &ServeOptions::default(),
        )
        .await;
        if bound.is_ok() || std::time::Instant::now() > deadline {
            break bound;
        }
        tokio::task::yield_now().await;
    };
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_servfail_soon_and_vm_names_still_answer() {
    // A loopback port nobody listens on: queries to it are refused at once
    // (ICMP port unreachable) or time out; either way the guest must get
    // an answer, not silence, and the VM zone must not wait on it.
    let closed = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let records = DnsRecords::new("vm").unwrap();
    records.upsert("web", Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    let server = DnsServer::bind(LOOPBACK, records, &forward_to(&[dead]))
        .await
        .unwrap();
    let addr = server.udp_addr();

    let started = std::time::Instant::now();
    let fwd = dig_async(addr, "www.example.test", "A", false).await;
    assert_eq!(fwd.status, "SERVFAIL", "{fwd:?}");
    // Before glibc's 5 s per try: the guest gets SERVFAIL, not silence.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        dig_async(addr, "web.vm", "A", false).await.answers,
        ["172.16.0.2"]
    );
    server.shutdown().await.unwrap();

    // A dead first nameserver (resolv.conf order) does not hide a live one.
    let up = upstream().await;
    let server = DnsServer::bind(
        LOOPBACK,
        DnsRecords::new("vm").unwrap(),
        &forward_to(&[dead, up.udp_addr()]),
    )
    .await
    .unwrap();
    let fwd = dig_async(server.udp_addr(), "www.example.test", "A", false).await;
    assert_eq!(fwd.answers, ["10.1.2.3"], "{fwd:?}");
    server.shutdown().await.unwrap();
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_the_allow_list_are_refused() {
    let records = DnsRecords::new("vm").unwrap();
    records.upsert("web", Ipv4Addr::new(172, 16, 0, 2)).unwrap();
    let only_bridge = ServeOptions {
        allowed_clients: vec!["172.16.0.0/24".parse().unwrap()],
        ..ServeOptions::default()
    };
    let server = DnsServer::bind(LOOPBACK, records.clone(), &only_bridge)
        .await
        .unwrap();
    let refused = dig_async(server.udp_addr(), "web.vm", "A", false).await;
    assert_eq!(
        (refused.status.as_str(), refused.answers.len()),
        ("REFUSED", 0),
        "{refused:?}"
    );
    server.shutdown().await.unwrap();

    let with_loopback = ServeOptions {
        allowed_clients: vec![
            "172.16.0.0/24".parse().unwrap(),
            "127.0.0.0/8".parse().unwrap(),
        ],
        ..ServeOptions::default()
    };
    let server = DnsServer::bind(LOOPBACK, records, &with_loopback)
        .await
        .unwrap();
    let ok = dig_async(server.udp_addr(), "web.vm", "A", false).await;
    assert_eq!(ok.answers, ["172.16.0.2"], "{ok:?}");
    server.shutdown().await.unwrap();
}

/// A guest holding many TCP connections gets only its share: those over
/// the per-client cap are closed at once, the slots it holds do not stop
/// another client, and they come back when it lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_and_idle_ones_dropped() {
    let records = DnsRecords::new("vm").unwrap();
    records.upsert("a", Ipv4Addr::new(172, 16, 0, 9)).unwrap();
    let options = ServeOptions {
        limits: banger_dns::Limits {
            tcp_per_client: 4,
            tcp_total: 6,
            ..banger_dns::Limits::default()
        },
        ..ServeOptions::default()
    };
    let server = DnsServer::bind(LOOPBACK, records, &options).await.unwrap();
    let addr = server.tcp_addr().unwrap();
    let conns: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Another client still gets answers over TCP; its connection was
    // accepted after the 20, so each of those is admitted or closed by now.
    let other = dig_from(addr, "127.0.0.2", "a.vm").await;
    assert_eq!(other.answers, ["172.16.0.9"], "{other:?}");
    let (open, closed) = tokio::task::spawn_blocking(move || {
        // Closed by the server: a read sees EOF; admitted ones wait for a
        // query (the short read times out, well inside the idle timeout).
        let mut open = Vec::new();
        let mut closed = 0;
        for mut c in conns {
            c.set_read_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
            let mut b = [0u8; 1];
            match std::io::Read::read(&mut c, &mut b) {
                Ok(0) => closed += 1,
                _ => open.push(c),
            }
        }
        (open, closed)
    })
    .await
    .unwrap();
    assert_eq!((open.len(), closed), (4, 16), "per-client cap");
    // Dropped, the slots come back as soon as the server sees the closes.
    drop(open);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let again = dig_from(addr, "127.0.0.1", "a.vm").await;
        if again.answers == ["172.16.0.9"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slots never came back: {again:?}"
        );
    }
}

/// `dig +tcp` from the local address `from`.
async fn dig_from(server: SocketAddr, from: &str, name: &str) -> Dig {
    let out = tokio::process::Command::new("dig")
        .args([
            "+tcp",
            "+time=3",
            "+tries=1",
            "-b",
            from,
            "-p",
            &server.port().to_string(),
            &format!("@{}", server.ip()),
            name,
            "A",
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let answers = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    Dig {
        status: text.clone(),
        flags: String::new(),
        answers,
    }
}
