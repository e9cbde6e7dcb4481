//! banger's tables against hostile guests and a host with other networks,
//! with the real kernel, inside namespaces each test makes. A guest is a
//! namespace joined to the bridge by a veth whose host end is named like a
//! tap (`bgt` + 12 hex), so the tap rules apply to it exactly as to a VM's
//! tap, and the guest can do what root in a VM can: add addresses, send
//! gratuitous ARP (busybox arping), send raw router advertisements.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use banger_net::{
    AllowRule, AllowTarget, Egress, Guest, GuestNet, Netlink, PortRange, Proto, Resolved, RuleSet,
    TapName, nft, sysctl,
};
use banger_testkit::netns::NetNs;

const BRIDGE: &str = "bangeri0";

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

struct Vm {
    ns: NetNs,
    guest: Guest,
}

/// A guest `n` (address 10.215.0.<n>, MAC 02:..:<n>) on the bridge of `host`.
fn vm(host: &NetNs, n: u8, egress: Egress) -> Vm {
    let ns = NetNs::new(&format!("vm{n}"));
    let tap = TapName::for_vm(&format!("{n:02x}0b0c0d0e0f1011")).unwrap();
    host.veth(tap.as_str(), &ns, "eth0");
    host.ip(&["link", "set", tap.as_str(), "master", BRIDGE]);
    let mac = format!("02:00:00:00:00:{n:02x}");
    ns.ip(&["link", "set", "eth0", "address", &mac]);
    ns.ip(&["addr", "add", &format!("10.215.0.{n}/24"), "dev", "eth0"]);
    ns.ip(&["route", "add", "default", "via", "10.215.0.1"]);
    Vm {
        ns,
        guest: Guest {
            tap,
            ip: format!("10.215.0.{n}").parse().unwrap(),
            mac: mac.parse().unwrap(),
            egress,
            ports: vec![],
        },
    }
}

/// The host: a bridge, forwarding, and both tables for `vms`.
fn up(host: &NetNs, vms: &[&Vm], guard: bool) {
    let rules = RuleSet {
        net: GuestNet {
            bridge: BRIDGE.into(),
            cidr: "10.215.0.1/24".parse().unwrap(),
        },
        guests: vms.iter().map(|v| v.guest.clone()).collect(),
        forward_guard: guard,
    };
    host.in_thread(|| {
        block_on(async {
            let nl = Netlink::connect().unwrap();
            nl.ensure_bridge(BRIDGE, rules.net.cidr).await.unwrap();
            sysctl::enable_ipv4_forwarding().unwrap();
            nft::apply(&rules).await.unwrap();
        })
    });
}

fn bridge_up(host: &NetNs) {
    host.in_thread(|| {
        block_on(async {
            let nl = Netlink::connect().unwrap();
            nl.ensure_bridge(BRIDGE, "10.215.0.1/24".parse().unwrap())
                .await
                .unwrap();
        })
    });
}

fn serve(ns: &NetNs, addr: &str, reply: &'static str) {
    let l = ns.in_thread(|| TcpListener::bind(addr)).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let _ = s.write_all(reply.as_bytes());
        }
    });
}

fn fetch(ns: &NetNs, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.in_thread(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

fn neigh_mac(ns: &NetNs, ip: &str) -> String {
    let out = ns.ip(&["neigh", "show", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn sh(ns: &NetNs, script: &str) -> String {
    let out = ns.command("sh").args(["-c", script]).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            eprintln!("not within {limit:?}: {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A router advertisement for 2001:db8:1::/64 from `ns`'s eth0 to all
/// nodes, as a guest's root could send it (raw ICMPv6; the kernel fills
/// in the checksum).
fn send_ra(ns: &NetNs) {
    wait_until("a link-local address", Duration::from_secs(10), || {
        let out = ns.ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"]);
        let t = String::from_utf8_lossy(&out.stdout).to_string();
        t.contains("inet6") && !t.contains("tentative")
    });
    ns.in_thread(|| {
        // SAFETY: plain socket calls on a descriptor this block owns; the
        // buffers outlive each call.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let hops: libc::c_int = 255;
            let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
            let size = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                size,
            );
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                (&ifindex as *const u32).cast(),
                size,
            );
            let mut ra = vec![134u8, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
            // Prefix information: /64, on-link and autonomous, a day.
            ra.extend_from_slice(&[3, 4, 64, 0xc0]);
            ra.extend_from_slice(&86_400u32.to_be_bytes());
            ra.extend_from_slice(&86_400u32.to_be_bytes());
            ra.extend_from_slice(&[0; 4]);
            ra.extend_from_slice(&"2001:db8:1::".parse::<Ipv6Addr>().unwrap().octets());
            let mut to: libc::sockaddr_in6 = std::mem::zeroed();
            to.sin6_family = libc::sa_family_t::try_from(libc::AF_INET6).unwrap();
            to.sin6_addr.s6_addr = "ff02::1".parse::<Ipv6Addr>().unwrap().octets();
            to.sin6_scope_id = ifindex;
            let n = libc::sendto(
                fd,
                ra.as_ptr().cast(),
                ra.len(),
                0,
                (&to as *const libc::sockaddr_in6).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in6>()).unwrap(),
            );
            assert_eq!(
                n,
                ra.len() as isize,
                "send RA: {}",
                std::io::Error::last_os_error()
            );
            libc::close(fd);
        }
    });
}

fn has_ra_address(ns: &NetNs) -> bool {
    let out = ns.ip(&["-6", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).contains("2001:db8:1:")
}

#[test]
fn guests_cannot_spoof_another_guest_or_the_gateway() {
    banger_testkit::require_tool("busybox", "busybox-static");
    let host = NetNs::new("spoof");
    bridge_up(&host);
    let (vm1, vm2, vm3) = (
        vm(&host, 2, Egress::All),
        vm(&host, 3, Egress::All),
        vm(&host, 4, Egress::All),
    );
    up(&host, &[&vm1, &vm2, &vm3], false);
    serve(&vm2.ns, "10.215.0.3:80", "vm2");
    serve(&vm1.ns, "0.0.0.0:80", "vm1");

    // Before: the host and vm3 reach vm2, and learn its MAC and the gateway's.
    assert_eq!(fetch(&host, "10.215.0.3:80").unwrap(), "vm2");
    assert_eq!(fetch(&vm3.ns, "10.215.0.3:80").unwrap(), "vm2");
    let ping = sh(&vm3.ns, "busybox ping -c 1 -W 2 10.215.0.1");
    let gw_mac = neigh_mac(&vm3.ns, "10.215.0.1");
    assert!(!gw_mac.is_empty(), "{ping}");
    assert_eq!(neigh_mac(&host, "10.215.0.3"), "02:00:00:00:00:03");

    // vm1 takes vm2's address and the gateway's and announces both.
    vm1.ns.ip(&["addr", "add", "10.215.0.3/32", "dev", "eth0"]);
    vm1.ns.ip(&["addr", "add", "10.215.0.1/32", "dev", "eth0"]);
    for ip in ["10.215.0.3", "10.215.0.1"] {
        let out = sh(
            &vm1.ns,
            &format!(
                "busybox arping -U -c 2 -w 1 -I eth0 -s {ip} {ip}; busybox arping -A -c 2 -w 1 -I eth0 -s {ip} {ip}"
            ),
        );
        assert!(!out.contains("invalid"), "{out}");
    }
    // An unchanged ARP entry could only be proven by waiting: the gratuitous
    // ARPs were sent synchronously above, so a second round trip to vm2 (each
    // side's next packet follows whatever entry it holds now) settles it.
    assert_eq!(
        fetch(&host, "10.215.0.3:80").unwrap(),
        "vm2",
        "the host still reaches vm2"
    );
    assert_eq!(
        fetch(&vm3.ns, "10.215.0.3:80").unwrap(),
        "vm2",
        "vm3 still reaches vm2"
    );
    assert_eq!(neigh_mac(&host, "10.215.0.3"), "02:00:00:00:00:03");
    assert_eq!(neigh_mac(&vm3.ns, "10.215.0.3"), "02:00:00:00:00:03");
    assert_eq!(
        neigh_mac(&vm3.ns, "10.215.0.1"),
        gw_mac,
        "the gateway is still the bridge"
    );

    // Forged source addresses reach nobody: a UDP datagram from vm2's
    // address (still vm1's; the gateway's it gives back, or it would keep
    // its own datagrams)
    // to the host's DNS port is dropped, the same from vm1's own arrives.
    vm1.ns.ip(&["addr", "del", "10.215.0.1/32", "dev", "eth0"]);
    let dns = host.in_thread(|| UdpSocket::bind("10.215.0.1:53")).unwrap();
    dns.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    vm1.ns
        .in_thread(|| {
            let s = UdpSocket::bind("10.215.0.3:0")?;
            s.send_to(b"forged", "10.215.0.1:53")?;
            let s = UdpSocket::bind("10.215.0.2:0")?;
            s.send_to(b"honest", "10.215.0.1:53")
        })
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = dns.recv_from(&mut buf).expect("the honest datagram");
    assert_eq!(
        (&buf[..n], from.ip().to_string().as_str()),
        (&b"honest"[..], "10.215.0.2")
    );
    assert!(
        dns.recv_from(&mut buf).is_err(),
        "a forged source got through"
    );

    // Router advertisements: one from a port that is not a guest's reaches
    // vm3 (the advertisement is sound), vm1's does not.
    let lan = NetNs::new("ralan");
    host.veth("ralan0", &lan, "eth0");
    host.ip(&["link", "set", "ralan0", "master", BRIDGE]);
    let started = Instant::now();
    send_ra(&lan);
    assert!(
        wait_until(
            "vm3 configures the advertised prefix",
            Duration::from_secs(10),
            || has_ra_address(&vm3.ns)
        ),
        "a sound RA did not configure vm3"
    );
    let took = started.elapsed();
    vm3.ns
        .ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
    vm3.ns.ip(&["-6", "route", "flush", "proto", "ra"]);
    send_ra(&vm1.ns);
    assert!(
        !wait_until(
            "vm1's RA reaches vm3",
            took * 3 + Duration::from_secs(1),
            || has_ra_address(&vm3.ns)
        ),
        "a guest's router advertisement configured another guest"
    );
}

#[test]
fn egress_none_and_allow_lists_hold() {
    let host = NetNs::new("egress");
    let inet = NetNs::new("egressnet");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.216.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.216.0.2/24", "dev", "eth0"]);
    inet.ip(&["addr", "add", "10.216.0.3/24", "dev", "eth0"]);
    inet.ip(&["route", "add", "10.215.0.0/24", "via", "10.216.0.1"]);
    bridge_up(&host);
    let allow = Egress::Allow(vec![
        AllowRule {
            target: AllowTarget::Net("10.216.0.2/32".parse().unwrap()),
            ports: Some(PortRange {
                first: 80,
                last: 80,
            }),
            proto: Some(Proto::Tcp),
        },
        AllowRule {
            target: AllowTarget::Name("internet.test".into()),
            ports: Some(PortRange {
                first: 81,
                last: 81,
            }),
            proto: None,
        },
    ]);
    let (none, listed, all) = (
        vm(&host, 2, Egress::None),
        vm(&host, 3, allow),
        vm(&host, 4, Egress::All),
    );
    up(&host, &[&none, &listed, &all], false);
    for addr in ["10.216.0.2:80", "10.216.0.2:81", "10.216.0.3:81"] {
        serve(&inet, addr, "internet");
    }
    serve(&all.ns, "10.215.0.4:80", "vm4");
    let dns = host.in_thread(|| UdpSocket::bind("10.215.0.1:53")).unwrap();
    dns.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    // all: everything.
    assert_eq!(fetch(&all.ns, "10.216.0.2:81").unwrap(), "internet");
    // none: neither the internet nor another guest; banger's DNS yes.
    assert!(fetch(&none.ns, "10.216.0.2:80").is_err());
    assert!(
        fetch(&none.ns, "10.215.0.4:80").is_err(),
        "none reached a guest"
    );
    none.ns
        .in_thread(|| UdpSocket::bind("10.215.0.2:0")?.send_to(b"q", "10.215.0.1:53"))
        .unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        dns.recv_from(&mut buf).unwrap().0,
        1,
        "DNS from a none guest"
    );
    // The list: 10.216.0.2:80, not :81, not another guest, until the name
    // resolves to 10.216.0.3 (port 81 only).
    assert_eq!(fetch(&listed.ns, "10.216.0.2:80").unwrap(), "internet");
    assert!(fetch(&listed.ns, "10.216.0.2:81").is_err());
    assert!(fetch(&listed.ns, "10.216.0.3:81").is_err());
    assert!(
        fetch(&listed.ns, "10.215.0.4:80").is_err(),
        "the list reached a guest"
    );
    let answer = [Resolved {
        ip: "10.216.0.3".parse().unwrap(),
        port: Some(81),
        proto: None,
        ttl_s: 30,
    }];
    host.in_thread(|| block_on(nft::allow_resolved(&listed.guest, &answer)))
        .unwrap();
    assert_eq!(fetch(&listed.ns, "10.216.0.3:81").unwrap(), "internet");
    assert!(
        fetch(&listed.ns, "10.216.0.2:81").is_err(),
        "only the resolved address"
    );
}

#[test]
fn the_forward_guard_keeps_the_host_from_routing_but_not_dockers_bridge() {
    let host = NetNs::new("guard");
    let (a, b, c) = (
        NetNs::new("guarda"),
        NetNs::new("guardb"),
        NetNs::new("guardc"),
    );
    host.veth("lana", &a, "eth0");
    host.veth("lanb", &b, "eth0");
    host.ip(&["addr", "add", "10.217.1.1/24", "dev", "lana"]);
    host.ip(&["addr", "add", "10.217.2.1/24", "dev", "lanb"]);
    a.ip(&["addr", "add", "10.217.1.2/24", "dev", "eth0"]);
    a.ip(&["route", "add", "default", "via", "10.217.1.1"]);
    b.ip(&["addr", "add", "10.217.2.2/24", "dev", "eth0"]);
    b.ip(&["route", "add", "default", "via", "10.217.2.1"]);
    // A Docker-style bridge with a container behind it.
    host.ip(&["link", "add", "dock0", "type", "bridge"]);
    host.ip(&["addr", "add", "172.18.0.1/16", "dev", "dock0"]);
    host.ip(&["link", "set", "dock0", "up"]);
    host.veth("dockc", &c, "eth0");
    host.ip(&["link", "set", "dockc", "master", "dock0"]);
    c.ip(&["addr", "add", "172.18.0.2/16", "dev", "eth0"]);
    c.ip(&["route", "add", "default", "via", "172.18.0.1"]);
    serve(&b, "10.217.2.2:80", "b");
    bridge_up(&host);

    // Without the guard (forwarding was on before banger): the host routes.
    up(&host, &[], false);
    assert_eq!(fetch(&a, "10.217.2.2:80").unwrap(), "b");
    // With it (forwarding was off): LAN to LAN no more, Docker's bridge still.
    up(&host, &[], true);
    assert!(
        fetch(&a, "10.217.2.2:80").is_err(),
        "the host routed between its LANs"
    );
    assert_eq!(
        fetch(&c, "10.217.2.2:80").unwrap(),
        "b",
        "Docker's bridge broke"
    );
}
