//! `banger vm ports VM`: the guest's listening sockets (through its agent)
//! with a ready URL per TCP port, `http://<name>.<domain>:<port>`, and the
//! host URL of a port the VM publishes. Also the `-p` and `--network`
//! options that `vm create` and `vm run` share, and how `vm ls` and `vm
//! show` print published ports.

use anyhow::{Context, Result, anyhow};
use banger_api::endpoints::{VmsPorts, VmsShow};
use banger_api::{PortProto, PortSpec, VmNetwork, VmRecord};
use banger_proto::ListeningPort;
use clap::Args;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::client;
use crate::output;

/// Host networking options of `vm create` and `vm run`.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Publish a guest port on the host, like Docker (repeatable)
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]",
        value_parser = parse_port_spec
    )]
    pub ports: Vec<PortSpec>,
    /// auto (as network.mode says), bridge (a NIC or the start fails) or none (no NIC)
    #[arg(long, default_value = "auto", value_parser = parse_network)]
    pub network: VmNetwork,
    /// Where the VM may send traffic: all, none (only banger's DNS), or a
    /// comma-separated allow list of IPv4 addresses, networks and DNS names,
    /// each with an optional :PORT[/tcp|/udp] (default: network.egress)
    #[arg(long, value_name = "all|none|ALLOWLIST", value_parser = parse_egress)]
    pub egress: Option<banger_api::Egress>,
}

fn parse_egress(s: &str) -> Result<banger_api::Egress, String> {
    s.parse()
}

fn parse_port_spec(s: &str) -> Result<PortSpec, String> {
    s.parse()
}

fn parse_network(s: &str) -> Result<VmNetwork, String> {
    s.parse()
}

/// `0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp`, as `docker ps` prints
/// it; `-` when the VM publishes nothing.
pub fn ports_column(vm: &VmRecord) -> String {
    if vm.ports.is_empty() {
        return "-".into();
    }
    vm.ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Args, Debug)]
pub struct PortsArgs {
    /// Name or unambiguous id prefix
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Serve each guest TCP port on this host (127.0.0.1, the same port
    /// when free) through the agent until Ctrl-C, and show those URLs
    #[arg(long)]
    forward: bool,
}

/// Where the URLs are for.
#[derive(Debug, Clone, Copy)]
enum View<'a> {
    /// This host, where `<name>.<domain>` resolves (the daemon is here).
    Local { domain: &'a str },
    /// A client of a daemon on `host`: only published ports on its
    /// addresses are in reach.
    Remote { host: &'a str },
}

/// One listening socket as `vm ports` reports it.
#[derive(Debug, Serialize)]
struct PortLine {
    proto: String,
    address: String,
    port: u16,
    pid: Option<u32>,
    process: Option<String>,
    /// `http://<name>.<domain>:<port>` for a TCP port reachable from
    /// outside the guest.
    url: Option<String>,
    /// Where the host publishes it, e.g. `http://127.0.0.1:8080`.
    host_urls: Vec<String>,
}

pub async fn run(a: PortsArgs) -> Result<()> {
    let c = client::daemon().await?;
    let vm = c.call::<VmsShow>(&[&a.reference], &()).await?;
    let listening = c.call::<VmsPorts>(&[&vm.id], &()).await?;
    let domain = banger_config::Config::load()?.network.domain;
    let view = match c.remote() {
        Some(t) => View::Remote { host: &t.host },
        None => View::Local { domain: &domain },
    };
    let mut lines = describe(&vm, view, listening);
    let mut listeners = Vec::new();
    if a.forward {
        for l in lines.iter_mut().filter(|l| l.proto.starts_with("tcp")) {
            if listeners.iter().any(|(_, p)| *p == l.port) {
                l.url = lines_url(&listeners, l.port);
                l.host_urls.clear();
                continue;
            }
            let here = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let listener = match TcpListener::bind(here(l.port)).await {
                Ok(x) => x,
                Err(_) => TcpListener::bind(here(0))
                    .await
                    .context("listen on 127.0.0.1")?,
            };
            let local = listener.local_addr()?;
            l.url = Some(format!("http://{local}"));
            l.host_urls.clear();
            listeners.push((listener, l.port));
        }
    }
    if a.json {
        output::json(&lines)?;
    } else {
        print_table(&lines);
    }
    if a.forward {
        if listeners.is_empty() {
            eprintln!("vm {} listens on no TCP port: nothing to forward", vm.name);
            return Ok(());
        }
        for (l, port) in listeners {
            tokio::spawn(super::forward::serve(
                l,
                c.clone(),
                vm.id.clone(),
                vm.name.clone(),
                port,
            ));
        }
        eprintln!("forwarding to {} until Ctrl-C", vm.name);
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| anyhow!("wait for Ctrl-C: {e}"))?;
    } else if let (Some(t), true) = (c.remote(), lines.iter().any(|l| l.proto.starts_with("tcp"))) {
        eprintln!(
            "these ports are on {t}: `banger vm ports {} --forward` serves them on this host",
            a.reference
        );
    }
    Ok(())
}

/// The URL already given to guest port `port` (a socket on both IPv4 and
/// IPv6 is one forward).
fn lines_url(listeners: &[(TcpListener, u16)], port: u16) -> Option<String> {
    listeners
        .iter()
        .find(|(_, p)| *p == port)
        .and_then(|(l, _)| l.local_addr().ok())
        .map(|a| format!("http://{a}"))
}

fn print_table(lines: &[PortLine]) {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let urls: Vec<&str> = l
                .url
                .iter()
                .chain(&l.host_urls)
                .map(String::as_str)
                .collect();
            vec![
                l.proto.clone(),
                l.address.clone(),
                l.port.to_string(),
                match (&l.process, l.pid) {
                    (Some(p), Some(pid)) => format!("{p} ({pid})"),
                    (Some(p), None) => p.clone(),
                    _ => "-".into(),
                },
                if urls.is_empty() {
                    "-".into()
                } else {
                    urls.join(" ")
                },
            ]
        })
        .collect();
    output::table(&["PROTO", "ADDRESS", "PORT", "PROCESS", "URL"], &rows);
}

/// Whether a socket bound to `address` in the guest takes connections
/// from outside it (not `127.x` or `::1`).
fn reachable(address: &str) -> bool {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

fn describe(vm: &VmRecord, view: View<'_>, mut ports: Vec<ListeningPort>) -> Vec<PortLine> {
    ports.sort_by(|a, b| (a.port, &a.proto, &a.address).cmp(&(b.port, &b.proto, &b.address)));
    ports
        .into_iter()
        .map(|p| {
            let tcp = p.proto.starts_with("tcp");
            let proto = if tcp { PortProto::Tcp } else { PortProto::Udp };
            let open = reachable(&p.address) && vm.no_network.is_none();
            let url = match view {
                View::Local { domain } => {
                    (tcp && open).then(|| format!("http://{}.{domain}:{}", vm.name, p.port))
                }
                View::Remote { .. } => None,
            };
            let host_urls = vm
                .ports
                .iter()
                .filter(|s| tcp && open && s.proto == proto && s.guest_port == p.port)
                .filter_map(|s| match (view, s.host_ip) {
                    (View::Local { .. }, ip) => {
                        let host = ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
                        Some(format!("http://{host}:{}", s.host_port))
                    }
                    // Published on loopback: out of reach from here.
                    (View::Remote { .. }, Some(ip)) if ip.is_loopback() => None,
                    (View::Remote { host }, ip) => {
                        let host = match ip {
                            Some(ip) if !ip.is_unspecified() => ip.to_string(),
                            _ if host.contains(':') => format!("[{host}]"),
                            _ => host.to_string(),
                        };
                        Some(format!("http://{host}:{}", s.host_port))
                    }
                })
                .collect();
            PortLine {
                proto: p.proto,
                address: p.address,
                port: p.port,
                pid: p.pid,
                process: p.process,
                url,
                host_urls,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening(proto: &str, address: &str, port: u16) -> ListeningPort {
        ListeningPort {
            proto: proto.into(),
            address: address.into(),
            port,
            pid: Some(7),
            process: Some("httpd".into()),
        }
    }

    #[test]
    fn urls_for_reachable_tcp_ports_and_their_published_host_ports() {
        let mut vm: VmRecord = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "name": "web", "image_id": "i", "kernel_id": "k",
            "spec": {"vcpus": 1, "memory_mib": 256, "overlay_disk_bytes": 1, "work_disk_bytes": 1},
            "desired_state": "running", "guest_ip": "172.16.0.2", "vsock_cid": 3,
            "dir": "/d", "overlay_disk": "/o", "work_disk": "/w",
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        vm.ports = vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()];
        let lines = describe(
            &vm,
            View::Local { domain: "vm" },
            vec![
                listening("tcp", "0.0.0.0", 80),
                listening("tcp", "127.0.0.1", 631),
                listening("udp", "0.0.0.0", 53),
                listening("tcp6", "::", 22),
            ],
        );
        let by_port = |p: u16| lines.iter().find(|l| l.port == p).unwrap();
        assert_eq!(by_port(80).url.as_deref(), Some("http://web.vm:80"));
        assert_eq!(by_port(80).host_urls, ["http://127.0.0.1:8080"]);
        assert_eq!(by_port(631).url, None, "loopback only");
        assert_eq!(by_port(53).url, None, "udp has no URL");
        assert_eq!(by_port(22).url.as_deref(), Some("http://web.vm:22"));
        assert_eq!(lines[0].port, 22, "sorted by port");
        assert_eq!(
            ports_column(&vm),
            "0.0.0.0:8080->80/tcp, 0.0.0.0:5353->53/udp"
        );
        // From another host: no `<name>.vm`, published ports on the
        // remote host's name, loopback ones out of reach.
        vm.ports = vec![
            "8080:80".parse().unwrap(),
            "127.0.0.1:8081:80".parse().unwrap(),
        ];
        let remote = describe(
            &vm,
            View::Remote { host: "box" },
            vec![listening("tcp", "0.0.0.0", 80)],
        );
        assert_eq!(remote[0].url, None);
        assert_eq!(remote[0].host_urls, ["http://box:8080"]);
        vm.no_network = Some("created with --network none".into());
        assert!(
            describe(
                &vm,
                View::Local { domain: "vm" },
                vec![listening("tcp", "0.0.0.0", 80)]
            )[0]
            .url
            .is_none()
        );
    }
}
