//! Published ports, the daemon's side: what a create may ask for, which
//! host ports are taken (by another VM at create, by another process at
//! start), and [`PublishedTable`], the DNAT rules the nft table must hold
//! for the VMs that run now.
//!
//! A VM's ports are part of its record (they survive stop and start); its
//! rules exist only while it runs: added by [`crate::network`] when the VM
//! acquires its NIC, removed when it releases it, and rebuilt from the
//! running VMs' records when a daemon re-adopts them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use banger_api::{PortProto, PortSpec, VmCreateRequest, VmNetwork, VmRecord};
use banger_config::config::{NetworkConfig, NetworkMode};
use banger_net::{Proto, PublishedPort, host_ports};

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

/// The DNAT rules of `vm`, whose guest address is `ip`.
pub(crate) fn rules_for(vm: &VmRecord, ip: Ipv4Addr) -> Vec<PublishedPort> {
    vm.ports
        .iter()
        .map(|p| PublishedPort {
            proto: proto(p.proto),
            host_ip: p.host_ip,
            host_port: p.host_port,
            guest_ip: ip,
            guest_port: p.guest_port,
        })
        .collect()
}

/// Refuse to publish a port a process of this host holds: the DNAT would
/// silently take its connections.
pub(crate) fn check_host_free(vm: &VmRecord) -> CoreResult<()> {
    for p in &vm.ports {
        if let Some(h) = host_ports::holder(proto(p.proto), p.host_ip, p.host_port) {
            return Err(CoreError::conflict(format!(
                "cannot publish {p} for vm {}: host port {}/{} is in use ({h}); stop that or recreate the vm with another -p",
                vm.name,
                p.host_port,
                p.proto.as_str()
            )));
        }
    }
    Ok(())
}

/// The published ports of the running VMs, and what was last applied.
#[derive(Debug, Default)]
pub(crate) struct PublishedTable {
    by_vm: BTreeMap<String, Vec<PublishedPort>>,
    applied: Option<Vec<PublishedPort>>,
}

impl PublishedTable {
    /// Every rule, in a stable order (by VM id, then as the VM lists them).
    pub fn all(&self) -> Vec<PublishedPort> {
        self.by_vm.values().flatten().cloned().collect()
    }

    /// The VM other than `vm_id` whose running rules catch the same
    /// packets as one of `ports`.
    pub fn taken_by(&self, vm_id: &str, ports: &[PublishedPort]) -> Option<&str> {
        self.by_vm
            .iter()
            .filter(|(id, _)| id.as_str() != vm_id)
            .find(|(_, theirs)| {
                theirs.iter().any(|q| {
                    ports.iter().any(|p| {
                        p.proto == q.proto
                            && p.host_port == q.host_port
                            && (p.host_ip.is_none()
                                || q.host_ip.is_none()
                                || p.host_ip == q.host_ip)
                    })
                })
            })
            .map(|(id, _)| id.as_str())
    }

    pub fn insert(&mut self, vm_id: &str, ports: Vec<PublishedPort>) {
        if ports.is_empty() {
            self.by_vm.remove(vm_id);
        } else {
            self.by_vm.insert(vm_id.to_string(), ports);
        }
    }

    /// Whether the VM had rules.
    pub fn remove(&mut self, vm_id: &str) -> bool {
        self.by_vm.remove(vm_id).is_some()
    }

    /// The rules to apply, or `None` when the table holds them already.
    pub fn pending(&self) -> Option<Vec<PublishedPort>> {
        let all = self.all();
        (self.applied.as_ref() != Some(&all)).then_some(all)
    }

    pub fn mark_applied(&mut self, ports: Vec<PublishedPort>) {
        self.applied = Some(ports);
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
    fn the_table_applies_only_changes() {
        let web = vm("web", &["8080:80"]);
        let rules = rules_for(&web, "172.16.0.2".parse().unwrap());
        let mut t = PublishedTable::default();
        assert_eq!(t.pending(), Some(vec![]));
        t.mark_applied(vec![]);
        assert_eq!(t.pending(), None);
        t.insert(&web.id, rules.clone());
        assert_eq!(t.pending(), Some(rules.clone()));
        assert_eq!(
            t.taken_by("ffffffffffffffff", &rules),
            Some(web.id.as_str())
        );
        assert_eq!(t.taken_by(&web.id, &rules), None);
        t.mark_applied(rules);
        assert!(t.remove(&web.id));
        assert!(!t.remove(&web.id));
        assert_eq!(t.pending(), Some(vec![]));
    }

    #[test]
    fn a_held_host_port_is_refused_at_start() {
        // An address of its own: another test's listener on 127.0.0.1 may
        // take the port number as soon as this one lets it go.
        let l = std::net::TcpListener::bind("127.0.0.77:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let web = vm("web", &[&format!("127.0.0.77:{port}:80")]);
        let e = check_host_free(&web).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(l);
        // A process this test binary forks (another test's mkfs) holds a
        // copy of every descriptor until it execs: the listener may
        // outlive the drop by a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = check_host_free(&web) {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
