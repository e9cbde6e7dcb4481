//! Benchmark: what the anti-spoofing rules cost on the bridge. Two
//! "guests" (namespaces on veths named like taps) and the host, iperf3 for
//! `SECS` seconds guest -> guest and guest -> host (the host fetching from
//! the guest: `-R`), `ROUNDS` rounds
//! alternating: with banger's tables as they are, and with the
//! `bridge banger` table (the per-tap MAC/IP filter, this branch's
//! addition) deleted, i.e. main's rules. Medians in Gbit/s. Inside
//! namespaces this benchmark makes (root; no traffic leaves them).
//!
//! ```text
//! cargo bench --profile dev -p banger-net --bench bridge_throughput
//! ```

use std::process::Command;

use banger_net::{Egress, Guest, GuestNet, Netlink, RuleSet, TapName, nft, sysctl};
use banger_testkit::netns::NetNs;

const ROUNDS: usize = 5;
const SECS: &str = "3";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Gbit/s from `client` to `server`; with `reverse`, the server sends.
fn iperf(client: &NetNs, server: &str, reverse: bool) -> f64 {
    let mut args = vec!["-c", server, "-t", SECS, "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.command("iperf3").args(&args).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3: {}", String::from_utf8_lossy(&out.stdout)))
        / 1e9
}

fn main() {
    banger_testkit::require_tool("iperf3", "iperf3");
    let host = NetNs::new("tput");
    let mut guests = Vec::new();
    let mut bound = Vec::new();
    for n in [2u8, 3] {
        let ns = NetNs::new(&format!("tput{n}"));
        let tap = TapName::for_vm(&format!("{n:02x}aa000000000000")).unwrap();
        guests.push(ns);
        bound.push((tap, n));
    }
    let rules = RuleSet {
        net: GuestNet {
            bridge: "bangerq0".into(),
            cidr: "10.231.0.1/24".parse().unwrap(),
        },
        guests: bound
            .iter()
            .map(|(tap, n)| Guest {
                tap: tap.clone(),
                ip: format!("10.231.0.{n}").parse().unwrap(),
                mac: format!("02:00:00:00:02:{n:02x}").parse().unwrap(),
                egress: Egress::All,
                ports: vec![],
            })
            .collect(),
        forward_guard: false,
    };
    host.in_thread(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let nl = Netlink::connect().unwrap();
                nl.ensure_bridge("bangerq0", rules.net.cidr).await.unwrap();
                sysctl::enable_ipv4_forwarding().unwrap();
            })
    });
    for ((tap, n), ns) in bound.iter().zip(&guests) {
        host.veth(tap.as_str(), ns, "eth0");
        host.ip(&["link", "set", tap.as_str(), "master", "bangerq0"]);
        ns.ip(&[
            "link",
            "set",
            "eth0",
            "address",
            &format!("02:00:00:00:02:{n:02x}"),
        ]);
        ns.ip(&["addr", "add", &format!("10.231.0.{n}/24"), "dev", "eth0"]);
    }
    let apply = |with_bridge_table: bool| {
        host.in_thread(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(nft::apply(&rules))
                .unwrap()
        });
        if !with_bridge_table {
            let ok = host
                .command("nft")
                .args(["delete", "table", "bridge", nft::TABLE])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    };
    // One server per namespace, serving the runs one after another.
    let mut servers = Vec::new();
    // The host's own ports are closed to guests (banger's input chain), so
    // guest -> host is the host fetching from a guest (`-R`).
    for (ns, addr) in [(&guests[1], "10.231.0.3:5201")] {
        servers.push(
            ns.command("iperf3")
                .args(["-s", "-B", addr.split(':').next().unwrap()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ns.in_thread(|| std::net::TcpStream::connect(addr)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "iperf3 -s never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let (mut gg, mut gh) = ([vec![], vec![]], [vec![], vec![]]);
    for _ in 0..ROUNDS {
        for (k, with) in [true, false].into_iter().enumerate() {
            apply(with);
            gg[k].push(iperf(&guests[0], "10.231.0.3", false));
            gh[k].push(iperf(&host, "10.231.0.3", true));
        }
    }
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let load = Command::new("uptime").output().unwrap();
    println!("veth 'taps' on a bridge, iperf3 -t {SECS}, median of {ROUNDS}, alternating:");
    println!(
        "  guest -> guest  with anti-spoofing {:6.2} Gbit/s   without {:6.2} Gbit/s",
        median(gg[0].clone()),
        median(gg[1].clone())
    );
    println!(
        "  guest -> host   with anti-spoofing {:6.2} Gbit/s   without {:6.2} Gbit/s",
        median(gh[0].clone()),
        median(gh[1].clone())
    );
    print!("load: {}", String::from_utf8_lossy(&load.stdout));
}
