//! Benchmark: the host side of a VM's NIC, as `vm start` and `vm stop` ask
//! for it (`CreateTap` with the VM's binding, egress and ports, then
//! `DeleteTap`), done in-process as a root daemon does, inside a network
//! namespace this benchmark makes (root needed; no traffic). p50 over
//! `RUNS` of each kind, alternating: no published port, one published port,
//! an allow list, with `GUESTS` other guests bound (the cost must not grow
//! with them).
//!
//! ```text
//! cargo bench --profile dev -p banger-helper --bench host_network
//! ```

use std::time::Instant;

use banger_helper::{GuestSpec, HostNetwork, InProcess, Policy, PolicyFile};
use banger_net::{AllowRule, AllowTarget, Egress, HostPort, PortRange, Proto};
use banger_testkit::netns::NetNs;

const RUNS: usize = 30;
const GUESTS: u8 = 20;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

fn spec(n: u8, egress: Egress, ports: Vec<HostPort>) -> GuestSpec {
    GuestSpec {
        vm_id: format!("{n:02x}00000000000000"),
        ip: format!("10.230.0.{}", n + 2).parse().unwrap(),
        mac: format!("02:00:00:00:01:{n:02x}").parse().unwrap(),
        egress,
        ports,
    }
}

fn main() {
    let ns = NetNs::new("bench");
    let (plain, published, listed) = ns.in_thread(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let policy = Policy::new(&PolicyFile {
                    bridge: "bangerb0".into(),
                    bridge_cidr: "10.230.0.1/24".parse().unwrap(),
                    ..PolicyFile::default()
                })
                .unwrap();
                let host = InProcess::start(policy, 0, None).await.unwrap();
                host.ensure_network().await.unwrap();
                for n in 100..100 + GUESTS {
                    host.create_tap(&spec(n, Egress::All, vec![]))
                        .await
                        .unwrap();
                }
                let port = vec![HostPort {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 18080,
                    guest_port: 8000,
                }];
                let allow = Egress::Allow(vec![AllowRule {
                    target: AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
                    ports: Some(PortRange {
                        first: 443,
                        last: 443,
                    }),
                    proto: Some(Proto::Tcp),
                }]);
                let kinds = [
                    spec(1, Egress::All, vec![]),
                    spec(1, Egress::All, port),
                    spec(1, allow, vec![]),
                ];
                let mut out = [vec![], vec![], vec![]];
                for _ in 0..RUNS {
                    for (k, s) in kinds.iter().enumerate() {
                        let t = Instant::now();
                        let tap = host.create_tap(s).await.unwrap();
                        let up = t.elapsed().as_secs_f64() * 1e3;
                        let t = Instant::now();
                        host.delete_tap(&tap).await.unwrap();
                        out[k].push((up, t.elapsed().as_secs_f64() * 1e3));
                    }
                }
                let [a, b, c] = out;
                (a, b, c)
            })
    });
    let load = std::process::Command::new("uptime").output().unwrap();
    println!("host side of a NIC (in-process, {GUESTS} other guests), p50 of {RUNS}:");
    for (name, v) in [
        ("no port", plain),
        ("one -p", published),
        ("allow list", listed),
    ] {
        let (up, down): (Vec<f64>, Vec<f64>) = v.into_iter().unzip();
        println!(
            "  {name:<10}  create_tap {:6.2} ms   delete_tap {:6.2} ms",
            p50(up),
            p50(down)
        );
    }
    print!("load: {}", String::from_utf8_lossy(&load.stdout));
}
