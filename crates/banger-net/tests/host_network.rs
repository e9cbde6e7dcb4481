//! banger-net against the real kernel, each test inside network
//! namespaces it creates: a "host" namespace where the library acts, a
//! "guest" namespace joined to the host's bridge by a veth (standing in
//! for a VM's tap), and an "internet" namespace behind the host's uplink
//! veth with a server of the test's own. No traffic leaves them.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use banger_net::{
    Egress, Guest, GuestNet, HostPort, NetError, Netlink, Proto, RuleSet, TableCheck, TapName, nft,
    sysctl,
};
use banger_testkit::netns::NetNs;

const BRIDGE: &str = "bangert0";

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Run async `f` with a netlink connection inside `ns`.
fn in_ns<R: Send, Fut: Future<Output = R>>(ns: &NetNs, f: impl FnOnce(Netlink) -> Fut + Send) -> R {
    ns.in_thread(|| block_on(async { f(Netlink::connect().expect("netlink")).await }))
}

fn ip_json(ns: &NetNs, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["-j"];
    a.extend_from_slice(args);
    serde_json::from_slice(&ns.ip(&a).stdout).expect("ip -j output")
}

#[test]
fn bridge_ensure_is_idempotent_and_refuses_non_bridges() {
    let host = NetNs::new("br");
    host.ip(&[
        "link", "add", "dummy7", "type", "veth", "peer", "name", "dummy7p",
    ]);
    let h = &host;
    let (first, second, moved, refused, removed) = in_ns(&host, |nl| async move {
        let a = nl
            .ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let b = nl
            .ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let addrs_after_twice = ip_json(h, &["-4", "addr", "show", "dev", BRIDGE]);
        // A new cidr replaces the old address rather than adding one.
        nl.ensure_bridge(BRIDGE, "10.214.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let moved = ip_json(h, &["-4", "addr", "show", "dev", BRIDGE]);
        let refused = nl
            .ensure_bridge("dummy7", "10.215.0.1/24".parse().unwrap())
            .await;
        nl.remove_bridge(BRIDGE).await.unwrap();
        nl.remove_bridge(BRIDGE).await.unwrap();
        let removed = !nl.bridge_exists(BRIDGE).await.unwrap();
        ((a, addrs_after_twice), b, moved, refused, removed)
    });
    assert_eq!(first.0, second, "same bridge both times");
    let addrs = &first.1[0]["addr_info"];
    assert_eq!(addrs.as_array().unwrap().len(), 1, "{addrs}");
    assert_eq!(addrs[0]["local"], "10.213.0.1");
    assert_eq!(addrs[0]["prefixlen"], 24);
    let flags = first.1[0]["flags"].as_array().unwrap();
    assert!(flags.iter().any(|f| f == "UP"), "{flags:?}");
    let addrs = &moved[0]["addr_info"];
    assert_eq!(addrs.as_array().unwrap().len(), 1, "{addrs}");
    assert_eq!(addrs[0]["local"], "10.214.0.1");
    match refused {
        Err(e @ NetError::NotABridge { .. }) => {
            assert!(e.to_string().contains("dummy7"), "{e}")
        }
        other => panic!("dummy7 adopted as a bridge: {other:?}"),
    }
    assert!(removed);
}

/// The bridge keeps its own MAC while taps join and leave: a bridge that
/// took its lowest port's MAC would move under the guests' ARP entries.
#[test]
fn the_bridge_mac_stays_put_as_taps_come_and_go() {
    let host = NetNs::new("brmac");
    let mac = |ns: &NetNs| ip_json(ns, &["link", "show", "dev", BRIDGE])[0]["address"].clone();
    let h = &host;
    let seen = in_ns(&host, |nl| async move {
        nl.ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let mut seen = vec![mac(h)];
        // Random tap MACs: with eight, one is lower than the first almost surely.
        let taps: Vec<TapName> = (0..8u8)
            .map(|i| TapName::for_vm(&format!("{i:02x}23456789abcdef")).unwrap())
            .collect();
        for t in &taps {
            nl.create_tap(t, 0, BRIDGE).await.unwrap();
            seen.push(mac(h));
        }
        for t in &taps {
            nl.delete_tap(t).await.unwrap();
            seen.push(mac(h));
        }
        // A daemon restart ensures the bridge again: same MAC.
        nl.ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
            .await
            .unwrap();
        seen.push(mac(h));
        seen
    });
    let want = banger_net::bridge_mac(BRIDGE)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        seen.iter().all(|m| m == &want),
        "bridge MAC moved: {seen:?}, want {want}"
    );
}

#[test]
fn taps_are_owned_attached_listed_and_deleted() {
    let host = NetNs::new("tap");
    let tap = TapName::for_vm("0123456789abcdef").unwrap();
    let other = TapName::for_vm("fedcba9876543210").unwrap();
    let listed = in_ns(&host, |nl| {
        let (tap, other) = (tap.clone(), other.clone());
        async move {
            nl.ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
                .await
                .unwrap();
            nl.create_tap(&tap, 1234, BRIDGE).await.unwrap();
            // Again: adopts the same device.
            nl.create_tap(&tap, 1234, BRIDGE).await.unwrap();
            nl.create_tap(&other, 1234, BRIDGE).await.unwrap();
            nl.list_taps().await.unwrap()
        }
    });
    let names: Vec<_> = listed.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, vec![tap.clone(), other.clone()]);
    assert!(listed.iter().all(|t| t.controller.is_some()));

    let owner = host
        .command("cat")
        .arg(format!("/sys/class/net/{tap}/owner"))
        .output()
        .unwrap();
    assert!(owner.status.success());
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "1234");
    let link = ip_json(&host, &["link", "show", "dev", tap.as_str()]);
    assert_eq!(link[0]["master"], BRIDGE, "{link}");
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "{link}"
    );

    // A queue opened for a VMM that takes an fd: the tap gets a carrier
    // while it is held. A missing tap is not created by opening it.
    let (queue, missing) = in_ns(&host, |nl| {
        let tap = tap.clone();
        async move {
            let q = nl.open_tap(&tap).await.unwrap();
            let missing = nl
                .open_tap(&TapName::for_vm("9999999999999999").unwrap())
                .await;
            (q, missing)
        }
    });
    let carrier = host
        .command("cat")
        .arg(format!("/sys/class/net/{tap}/carrier"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&carrier.stdout).trim(), "1");
    drop(queue);
    assert!(
        matches!(missing, Err(NetError::NoSuchLink { .. })),
        "{missing:?}"
    );

    let missing_bridge = in_ns(&host, |nl| {
        let (tap, other) = (tap.clone(), other.clone());
        async move {
            nl.delete_tap(&tap).await.unwrap();
            nl.delete_tap(&tap).await.unwrap();
            nl.delete_tap(&other).await.unwrap();
            assert!(nl.list_taps().await.unwrap().is_empty());
            // No bridge: refused, and no tap left behind.
            let e = nl.create_tap(&tap, 1234, "bangernone").await;
            (e, nl.list_taps().await.unwrap())
        }
    });
    assert!(
        matches!(missing_bridge.0, Err(NetError::NoSuchLink { .. })),
        "{missing_bridge:?}"
    );
    assert!(missing_bridge.1.is_empty());
}

/// Try TUNSETIFF on `tap` as `uid` with no capabilities, the way an
/// unprivileged VMM opens its tap. The uid change is a raw syscall on a
/// dedicated thread, so it affects that thread alone.
///
/// The clone device is opened through a node of our own with mode 0666,
/// as Debian's udev makes /dev/net/tun; some machines (this development
/// container) ship it 0600, which would hide what TUNSETOWNER grants.
fn open_tap_as(ns: &NetNs, tap: &TapName, uid: u32) -> std::io::Result<()> {
    let name = tap.to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let node = dir.path().join("tun");
    let cpath = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: cpath is a valid C string; 10:200 is the tun clone device.
    let rc = unsafe {
        libc::mknod(
            cpath.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(10, 200),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        node.display(),
        std::io::Error::last_os_error()
    );
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    ns.in_thread(move || {
        // SAFETY: raw setresuid on this thread only (glibc's wrapper would
        // change every thread of the test process); all uids non-zero
        // clears the thread's capabilities.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        assert_eq!(rc, 0, "setresuid {uid}");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node)?;
        // SAFETY: plain old data, all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI).unwrap();
        // SAFETY: f is an open tun fd and ifr lives across the call.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
}

#[test]
fn only_the_owner_uid_can_open_its_tap() {
    let host = NetNs::new("tapown");
    let tap = TapName::for_vm("aaaabbbbccccdddd").unwrap();
    in_ns(&host, |nl| {
        let tap = tap.clone();
        async move {
            nl.ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
                .await
                .unwrap();
            nl.create_tap(&tap, 1234, BRIDGE).await.unwrap();
        }
    });
    open_tap_as(&host, &tap, 1234).expect("the owner opens its tap");
    let e = open_tap_as(&host, &tap, 1235).expect_err("another uid opened the tap");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
}

#[test]
fn overlapping_bridge_network_is_refused_with_the_route() {
    let host = NetNs::new("rt");
    let inet = NetNs::new("rtnet");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", "up0"]);
    let (overlap, own) = in_ns(&host, |nl| async move {
        let overlap = nl
            .check_cidr_free("198.51.100.129/25".parse().unwrap(), BRIDGE)
            .await;
        nl.ensure_bridge(BRIDGE, "10.213.0.1/24".parse().unwrap())
            .await
            .unwrap();
        let own = nl
            .check_cidr_free("10.213.0.1/24".parse().unwrap(), BRIDGE)
            .await;
        (overlap, own)
    });
    let e = overlap.expect_err("overlap accepted");
    let msg = e.to_string();
    assert!(
        msg.contains("198.51.100.0/24") && msg.contains("up0"),
        "{msg}"
    );
    own.expect("the bridge's own route is no overlap");
}

fn bound(id: &str, ip: &str, mac: &str, ports: Vec<HostPort>) -> Guest {
    Guest {
        tap: TapName::for_vm(id).unwrap(),
        ip: ip.parse().unwrap(),
        mac: mac.parse().unwrap(),
        egress: Egress::All,
        ports,
    }
}

#[test]
fn rules_are_applied_atomically_verified_and_removed() {
    let host = NetNs::new("nft");
    let mut rules = RuleSet {
        net: GuestNet {
            bridge: BRIDGE.into(),
            cidr: "10.213.0.1/24".parse().unwrap(),
        },
        guests: vec![bound(
            "0a0b0c0d0e0f1011",
            "10.213.0.9",
            "02:00:00:00:00:09",
            vec![HostPort {
                proto: Proto::Udp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                guest_port: 53,
            }],
        )],
        forward_guard: true,
    };
    let check = |rules: &RuleSet| host.in_thread(|| block_on(nft::verify(rules))).unwrap();
    assert_eq!(check(&rules), TableCheck::Missing);
    host.in_thread(|| block_on(nft::apply(&rules))).unwrap();
    // Applying again replaces, it does not append.
    host.in_thread(|| block_on(nft::apply(&rules))).unwrap();
    assert_eq!(check(&rules), TableCheck::Matches);
    // A guest added and removed by elements leaves the tables as a whole
    // apply of the same state would.
    let second = bound(
        "1a0b0c0d0e0f1011",
        "10.213.0.10",
        "02:00:00:00:00:0a",
        vec![],
    );
    host.in_thread(|| block_on(nft::attach(&second))).unwrap();
    rules.guests.push(second.clone());
    assert_eq!(check(&rules), TableCheck::Matches);
    host.in_thread(|| block_on(nft::detach(&second))).unwrap();
    rules.guests.pop();
    assert_eq!(check(&rules), TableCheck::Matches);
    // Removing the element of the first by hand is seen.
    let out = host
        .command("nft")
        .args([
            "delete",
            "element",
            "inet",
            nft::TABLE,
            "ports_udp",
            "{ 127.0.0.1 . 5353 }",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(matches!(check(&rules), TableCheck::Differs(d) if d.contains("ports_udp")));
    assert!(host.in_thread(|| block_on(nft::tables_present())).unwrap());
    host.in_thread(|| block_on(nft::remove())).unwrap();
    host.in_thread(|| block_on(nft::remove())).unwrap();
    assert!(!host.in_thread(|| block_on(nft::tables_present())).unwrap());
}

/// Accept connections on `l`, answering each with `reply(peer)`.
fn serve(l: TcpListener, reply: fn(SocketAddr) -> String) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let peer = s.peer_addr().unwrap();
            let _ = s.write_all(reply(peer).as_bytes());
        }
    });
}

fn fetch(addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn nat_isolation_and_published_ports_work_end_to_end() {
    let host = NetNs::new("host");
    let guest = NetNs::new("guest");
    let inet = NetNs::new("inet");
    // The host's "uplink" into a private internet of the test's own.
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]);

    // The "VMs": veths whose host ends are bridge ports named like taps.
    let tap1 = "bgt0a0b0c0d0e0f";
    let tap2 = "bgt1a0b0c0d0e0f";
    let rules = RuleSet {
        net: GuestNet {
            bridge: BRIDGE.into(),
            cidr: "10.213.0.1/24".parse().unwrap(),
        },
        guests: vec![
            bound(
                "0a0b0c0d0e0f1011",
                "10.213.0.2",
                "02:00:00:00:00:02",
                vec![HostPort {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    guest_port: 80,
                }],
            ),
            bound(
                "1a0b0c0d0e0f1011",
                "10.213.0.3",
                "02:00:00:00:00:03",
                vec![],
            ),
        ],
        forward_guard: false,
    };
    in_ns(&host, |nl| {
        let rules = rules.clone();
        async move {
            nl.ensure_bridge(BRIDGE, rules.net.cidr).await.unwrap();
            sysctl::enable_ipv4_forwarding().unwrap();
            sysctl::enable_route_localnet(BRIDGE).unwrap();
            assert!(sysctl::ipv4_forwarding_enabled());
            nft::apply(&rules).await.unwrap();
        }
    });
    host.veth(tap1, &guest, "eth0");
    host.ip(&["link", "set", tap1, "master", BRIDGE]);
    guest.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:02"]);
    guest.ip(&["addr", "add", "10.213.0.2/24", "dev", "eth0"]);
    guest.ip(&["route", "add", "default", "via", "10.213.0.1"]);

    // Internet server reports the source address it saw.
    serve(
        inet.in_thread(|| TcpListener::bind("198.51.100.2:80"))
            .unwrap(),
        |peer| peer.ip().to_string(),
    );
    // Guest server behind the published port.
    serve(
        guest
            .in_thread(|| TcpListener::bind("10.213.0.2:80"))
            .unwrap(),
        |_| "from-guest".to_string(),
    );
    // A host service that guests must not reach (think sshd), and DNS.
    serve(
        host.in_thread(|| TcpListener::bind("0.0.0.0:2222"))
            .unwrap(),
        |_| "host-private".to_string(),
    );
    let dns = host.in_thread(|| UdpSocket::bind("10.213.0.1:53")).unwrap();
    dns.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    // NAT: the internet sees the host's uplink address, not the guest's.
    let seen = guest
        .in_thread(|| fetch("198.51.100.2:80"))
        .expect("guest reaches the internet");
    assert_eq!(seen, "198.51.100.1");

    // Published port: on the host's address, on 127.0.0.1, and from outside.
    assert_eq!(
        host.in_thread(|| fetch("198.51.100.1:8080")).unwrap(),
        "from-guest"
    );
    assert_eq!(
        host.in_thread(|| fetch("127.0.0.1:8080")).unwrap(),
        "from-guest"
    );
    assert_eq!(
        inet.in_thread(|| fetch("198.51.100.1:8080")).unwrap(),
        "from-guest"
    );
    // And from another guest through the host's address (hairpin NAT).
    // A guest reaching its own published port this way does not work:
    // after the DNAT its packet has source = destination, which the
    // kernel's routing drops.
    let guest2 = NetNs::new("guest2");
    host.veth(tap2, &guest2, "eth0");
    host.ip(&["link", "set", tap2, "master", BRIDGE]);
    guest2.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:03"]);
    guest2.ip(&["addr", "add", "10.213.0.3/24", "dev", "eth0"]);
    guest2.ip(&["route", "add", "default", "via", "10.213.0.1"]);
    assert_eq!(
        guest2.in_thread(|| fetch("198.51.100.1:8080")).unwrap(),
        "from-guest"
    );

    // Isolation: the host's own service answers locally but not to guests,
    // on the bridge address or any other address of the host.
    assert_eq!(
        host.in_thread(|| fetch("127.0.0.1:2222")).unwrap(),
        "host-private"
    );
    for target in ["10.213.0.1:2222", "198.51.100.1:2222"] {
        let r = guest.in_thread(|| fetch(target));
        assert!(r.is_err(), "guest reached host service at {target}: {r:?}");
    }
    // ...while DNS on the bridge address is let through.
    guest
        .in_thread(|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(b"query", "10.213.0.1:53")
        })
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = dns
        .recv_from(&mut buf)
        .expect("DNS query from the guest arrives");
    assert_eq!(&buf[..n], b"query");
    assert_eq!(from.ip().to_string(), "10.213.0.2");

    // Outside cannot open connections to the guest directly (only via DNAT).
    inet.ip(&["route", "add", "10.213.0.0/24", "via", "198.51.100.1"]);
    let r = inet.in_thread(|| fetch("10.213.0.2:80"));
    assert!(r.is_err(), "internet reached the guest directly: {r:?}");
}
