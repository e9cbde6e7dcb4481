//! Published ports, the daemon's side: what a create may ask for, which
//! host ports another VM takes (at create), and [`PublishedTable`], the
//! ports of the VMs that run now. A port another process holds is refused
//! by the host network itself, which binds each published port while it
//! is published (see `banger_net::HeldPort`).
//!
//! A VM's ports are part of its record (they survive stop and start); they
//! are published only while it runs: with its tap, when the VM acquires
//! its NIC ([`crate::network`]), and given back with it.

use std::collections::BTreeMap;

use banger_api::{PortProto, PortSpec, VmCreateRequest, VmNetwork, VmRecord};
use banger_config::config::{NetworkConfig, NetworkMode};
use banger_net::{HostPort, Proto};

use crate::error::{CoreError, CoreResult};

/// Refuse a create whose ports are malformed, overlap each other, or can
/// never be published (no NIC).
pub fn check_ports_request(req: &VmCreateRequest, net: &NetworkConfig) -> CoreResult<()> {
    banger_api::validate_ports(&req.ports).map_err(CoreError::invalid)?;
    let Some(first) = req.ports.first() else {
        return Ok(());
    };
    if req.network == VmNetwork::None {
        return Err(CoreError::invalid(format!(
            "-p {} needs a network; a VM created with --network none publishes no ports",
            first.to_flag()
        )));
    }
    if net.mode == NetworkMode::None {
        return Err(CoreError::invalid(format!(
            "-p {} needs host networking, and network.mode is \"none\"",
            first.to_flag()
        )));
    }
    Ok(())
}

/// Refuse ports another VM already publishes (running or not: its ports
/// are its own for its whole life).
pub fn check_ports_free(ports: &[PortSpec], vms: &[VmRecord]) -> CoreResult<()> {
    for p in ports {
        for vm in vms {
            if let Some(q) = vm.ports.iter().find(|q| q.overlaps(p)) {
                return Err(CoreError::conflict(format!(
                    "host port {}/{} is already published by vm {} ({q})",
                    p.host_port,
                    p.proto.as_str(),
                    vm.name
                )));
            }
        }
    }
    Ok(())
}

fn proto(p: PortProto) -> Proto {
    match p {
        PortProto::Tcp => Proto::Tcp,
        PortProto::Udp => Proto::Udp,
    }
}

/// `ports` with the config's `network.publish_address` given to those
/// that name no host address (`-p 8080:80`).
pub fn with_publish_address(ports: &[PortSpec], net: &NetworkConfig) -> Vec<PortSpec> {
    ports
        .iter()
        .map(|p| PortSpec {
            host_ip: p.host_ip.or(net.publish_address),
            ..*p
        })
        .collect()
}

/// What the host network is asked to publish for `vm`: the guest's
/// address is not part of it (the helper forwards to the address it bound
/// to the VM's tap).
pub(crate) fn host_ports(vm: &VmRecord) -> Vec<HostPort> {
    vm.ports
        .iter()
        .map(|p| HostPort {
            proto: proto(p.proto),
            host_ip: p.host_ip,
            host_port: p.host_port,
            guest_port: p.guest_port,
        })
        .collect()
}

/// The published ports of the running VMs, for a conflict message that
/// names the VM rather than its tap.
#[derive(Debug, Default)]
pub(crate) struct PublishedTable {
    by_vm: BTreeMap<String, Vec<HostPort>>,
}

impl PublishedTable {
    /// Every published port, in a stable order (by VM id).
    pub fn all(&self) -> Vec<HostPort> {
        self.by_vm.values().flatten().copied().collect()
    }

    /// The VM other than `vm_id` publishing one of `ports`.
    pub fn taken_by(&self, vm_id: &str, ports: &[HostPort]) -> Option<&str> {
        self.by_vm
            .iter()
            .filter(|(id, _)| id.as_str() != vm_id)
            .find(|(_, theirs)| theirs.iter().any(|q| ports.iter().any(|p| p.overlaps(q))))
            .map(|(id, _)| id.as_str())
    }

    pub fn insert(&mut self, vm_id: &str, ports: Vec<HostPort>) {
        if ports.is_empty() {
            self.by_vm.remove(vm_id);
        } else {
            self.by_vm.insert(vm_id.to_string(), ports);
        }
    }

    pub fn remove(&mut self, vm_id: &str) {
        self.by_vm.remove(vm_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, ports: &[&str]) -> VmRecord {
        let mut v: VmRecord = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "name": name, "image_id": "i", "kernel_id": "k",
            "spec": {"vcpus": 1, "memory_mib": 256, "overlay_disk_bytes": 1, "work_disk_bytes": 1},
            "desired_state": "stopped", "guest_ip": "172.16.0.2", "vsock_cid": 3,
            "dir": "/d", "overlay_disk": "/o", "work_disk": "/w",
            "created_at": "t", "updated_at": "t"
        }))
        .unwrap();
        v.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        v
    }

    #[test]
    fn a_port_of_another_vm_is_a_conflict_naming_it() {
        let web = vm("web", &["8080:80", "127.0.0.1:9000:9000/udp"]);
        let want: Vec<PortSpec> = vec!["127.0.0.1:8080:81".parse().unwrap()];
        let e = check_ports_free(&want, std::slice::from_ref(&web)).unwrap_err();
        assert!(
            e.to_string().contains("8080/tcp") && e.to_string().contains("vm web"),
            "{}",
            e
        );
        let fine: Vec<PortSpec> = vec![
            "8080:80/udp".parse().unwrap(),
            "10.0.0.1:9000:9000/udp".parse().unwrap(),
        ];
        check_ports_free(&fine, &[web]).unwrap();
    }

    #[test]
    fn ports_need_a_nic() {
        let mut req = VmCreateRequest {
            ports: vec!["8080:80".parse().unwrap()],
            network: VmNetwork::None,
            ..VmCreateRequest::default()
        };
        let net = NetworkConfig::default();
        let e = check_ports_request(&req, &net).unwrap_err();
        assert!(e.to_string().contains("--network none"), "{e}");
        req.network = VmNetwork::Auto;
        check_ports_request(&req, &net).unwrap();
        let off = NetworkConfig {
            mode: NetworkMode::None,
            ..NetworkConfig::default()
        };
        assert!(check_ports_request(&req, &off).is_err());
        req.ports.push("8080:81".parse().unwrap());
        let e = check_ports_request(&req, &net).unwrap_err();
        assert!(e.to_string().contains("published twice"), "{e}");
    }

    #[test]
    fn the_table_names_the_vm_holding_a_port() {
        let web = vm("web", &["8080:80"]);
        let ports = host_ports(&web);
        let mut t = PublishedTable::default();
        t.insert(&web.id, ports.clone());
        assert_eq!(t.all(), ports);
        assert_eq!(
            t.taken_by("ffffffffffffffff", &ports),
            Some(web.id.as_str())
        );
        assert_eq!(t.taken_by(&web.id, &ports), None);
        t.remove(&web.id);
        assert!(t.all().is_empty());
    }

    #[test]
    fn the_publish_address_fills_in_ports_without_one() {
        let net = NetworkConfig {
            publish_address: Some(std::net::Ipv4Addr::LOCALHOST),
            ..NetworkConfig::default()
        };
        let ports: Vec<PortSpec> =
            vec!["8080:80".parse().unwrap(), "10.0.0.1:9:9".parse().unwrap()];
        let out = with_publish_address(&ports, &net);
        assert_eq!(out[0].host_ip, Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(out[1].host_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            with_publish_address(&ports, &NetworkConfig::default()),
            ports
        );
    }
}
