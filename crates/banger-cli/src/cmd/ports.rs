//! `banger vm ports VM`: the guest's listening sockets (through its agent)
//! with a ready URL per TCP port, `http://<name>.<domain>:<port>`, and the
//! host URL of a port the VM publishes. Also the `-p` and `--network`
//! options that `vm create` and `vm run` share, and how `vm ls` and `vm
//! show` print published ports.

use anyhow::Result;
use banger_api::endpoints::{VmsPorts, VmsShow};
use banger_api::{PortProto, PortSpec, VmNetwork, VmRecord};
use banger_proto::ListeningPort;
use clap::Args;
use serde::Serialize;

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
    let domain = banger_config::Config::load()?.network.domain;
    let c = client::daemon().await?;
    let vm = c.call::<VmsShow>(&[&a.reference], &()).await?;
    let listening = c.call::<VmsPorts>(&[&vm.id], &()).await?;
    let lines = describe(&vm, &domain, listening);
    if a.json {
        return output::json(&lines);
    }
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
    Ok(())
}

/// Whether a socket bound to `address` in the guest takes connections
/// from outside it (not `127.x` or `::1`).
fn reachable(address: &str) -> bool {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_loopback(),
        Err(_) => true,
    }
}

fn describe(vm: &VmRecord, domain: &str, mut ports: Vec<ListeningPort>) -> Vec<PortLine> {
    ports.sort_by(|a, b| (a.port, &a.proto, &a.address).cmp(&(b.port, &b.proto, &b.address)));
    ports
        .into_iter()
        .map(|p| {
            let tcp = p.proto.starts_with("tcp");
            let proto = if tcp { PortProto::Tcp } else { PortProto::Udp };
            let open = reachable(&p.address) && vm.no_network.is_none();
            let url = (tcp && open).then(|| format!("http://{}.{domain}:{}", vm.name, p.port));
            let host_urls = vm
                .ports
                .iter()
                .filter(|s| tcp && open && s.proto == proto && s.guest_port == p.port)
                .map(|s| {
                    let host = s.host_ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST);
                    format!("http://{host}:{}", s.host_port)
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
            "vm",
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
        vm.no_network = Some("created with --network none".into());
        assert!(
            describe(&vm, "vm", vec![listening("tcp", "0.0.0.0", 80)])[0]
                .url
                .is_none()
        );
    }
}
