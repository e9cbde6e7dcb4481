//! The helper's policy: root's configuration, never a client's. Which
//! bridge and guest network the helper runs, which host ports its owner
//! may publish, and the checks every request about a guest passes before
//! anything is touched: an address of the guest network that no other tap
//! holds, a unicast MAC, ports in the publishable range.
//!
//! It comes from flags or a root-owned TOML file (`/etc/banger/helper.toml`,
//! written by `banger system install`):
//!
//! ```toml
//! bridge = "banger0"
//! bridge_cidr = "172.16.0.1/24"
//! publish_ports = "1024-65535"
//! allow_low_ports = false
//! ```
//!
//! A file the owner could write would let the owner set the policy that
//! is meant to bind it, so one that is not root's, or is writable by
//! group or others, is refused.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use banger_net::{Egress, GuestNet, HostPort, MacAddr, PortRange, bridge_mac};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::HelperError;

/// Where `system install` writes the helper's configuration.
pub const DEFAULT_CONFIG: &str = "/etc/banger/helper.toml";

/// The helper's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    pub bridge: String,
    pub bridge_cidr: Ipv4Net,
    /// Host ports the owner may publish, `FIRST-LAST`.
    pub publish_ports: String,
    /// Whether ports below 1024 may be published at all (root's
    /// decision: a DNAT of port 22 would hand the owner every SSH
    /// connection to the host).
    pub allow_low_ports: bool,
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            bridge: "banger0".into(),
            bridge_cidr: "172.16.0.1/24".parse().expect("valid default"),
            publish_ports: "1024-65535".into(),
            allow_low_ports: false,
        }
    }
}

impl PolicyFile {
    /// Read `path`, which must be root's and writable by root alone.
    pub fn load(path: &Path) -> Result<Self, HelperError> {
        let bad = |why: String| HelperError::Config {
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(bad(format!(
                "must be owned by root and writable by root only (it is uid {}, mode {:o})",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        toml::from_str(&text).map_err(|e| bad(e.message().to_string()))
    }

    /// The file's text, as `system install` writes it.
    pub fn render(&self) -> String {
        format!(
            "# Written by `banger system install`: the root helper's policy. Only root\n\
             # may change it; the helper reads it at start (banger system restart).\n\
             bridge = \"{}\"\n\
             bridge_cidr = \"{}\"\n\
             # Host ports the owner may publish (vm create -p).\n\
             publish_ports = \"{}\"\n\
             allow_low_ports = {}\n",
            self.bridge, self.bridge_cidr, self.publish_ports, self.allow_low_ports
        )
    }
}

/// The checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    net: GuestNet,
    publish: PortRange,
    allow_low_ports: bool,
}

impl Policy {
    pub fn new(file: &PolicyFile) -> Result<Self, HelperError> {
        let net = GuestNet {
            bridge: file.bridge.clone(),
            cidr: file.bridge_cidr,
        };
        net.validate()?;
        let publish = parse_range(&file.publish_ports).ok_or_else(|| {
            HelperError::Refused(format!(
                "publish_ports {:?} is not a port range like 1024-65535",
                file.publish_ports
            ))
        })?;
        Ok(Policy {
            net,
            publish,
            allow_low_ports: file.allow_low_ports,
        })
    }

    /// The network this helper runs.
    pub fn net(&self) -> &GuestNet {
        &self.net
    }

    pub fn publish_ports(&self) -> PortRange {
        self.publish
    }

    pub fn allow_low_ports(&self) -> bool {
        self.allow_low_ports
    }

    /// A guest's address and MAC: an address of the guest network (not
    /// the gateway, network or broadcast), a unicast MAC that is not the
    /// bridge's.
    pub fn check_guest(&self, ip: Ipv4Addr, mac: MacAddr) -> Result<(), HelperError> {
        if !self.net.is_guest_address(ip) {
            return Err(HelperError::Refused(format!(
                "{ip} is not a guest address of {} ({})",
                self.net.bridge, self.net.cidr
            )));
        }
        if !mac.is_unicast() || mac.0 == bridge_mac(&self.net.bridge) {
            return Err(HelperError::Refused(format!(
                "{mac} may not be a guest's MAC (not unicast, or the bridge's)"
            )));
        }
        Ok(())
    }

    /// A guest's published ports: in the publishable range, below 1024
    /// only when root allowed it, none twice.
    pub fn check_ports(&self, ports: &[HostPort]) -> Result<(), HelperError> {
        for (i, p) in ports.iter().enumerate() {
            if p.guest_port == 0 {
                return Err(HelperError::Refused(format!("{p}: guest port 0")));
            }
            if p.host_port < 1024 && !self.allow_low_ports {
                return Err(HelperError::Refused(format!(
                    "host port {} is below 1024; publishing it needs root's allow_low_ports = true in the helper's configuration",
                    p.host_port
                )));
            }
            let allowed_low = p.host_port < 1024 && self.allow_low_ports;
            if !allowed_low && !self.publish.contains(p.host_port) {
                return Err(HelperError::Refused(format!(
                    "host port {} is outside the publishable range {}",
                    p.host_port, self.publish
                )));
            }
            if ports[..i].iter().any(|q| q.overlaps(p)) {
                return Err(HelperError::Refused(format!(
                    "host port {}/{} is published twice",
                    p.host_port,
                    p.proto.as_str()
                )));
            }
        }
        Ok(())
    }

    pub fn check_egress(&self, egress: &Egress) -> Result<(), HelperError> {
        egress
            .validate()
            .map_err(|e| HelperError::Refused(e.to_string()))
    }
}

fn parse_range(s: &str) -> Option<PortRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = a.trim().parse().ok()?;
    let last: u16 = b.trim().parse().ok()?;
    (first > 0 && first <= last).then_some(PortRange { first, last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_net::Proto;

    fn policy(low: bool) -> Policy {
        Policy::new(&PolicyFile {
            allow_low_ports: low,
            ..PolicyFile::default()
        })
        .unwrap()
    }

    fn port(host_port: u16) -> HostPort {
        HostPort {
            proto: Proto::Tcp,
            host_ip: None,
            host_port,
            guest_port: 80,
        }
    }

    #[test]
    fn guests_must_live_in_the_network() {
        let p = policy(false);
        let mac: MacAddr = "02:01:02:03:04:05".parse().unwrap();
        p.check_guest("172.16.0.2".parse().unwrap(), mac).unwrap();
        for ip in ["172.16.0.1", "172.16.1.2", "192.168.0.1", "172.16.0.255"] {
            let e = p.check_guest(ip.parse().unwrap(), mac).unwrap_err();
            assert!(e.to_string().contains("not a guest address"), "{e}");
        }
        let bridge = MacAddr(bridge_mac("banger0"));
        assert!(
            p.check_guest("172.16.0.2".parse().unwrap(), bridge)
                .is_err()
        );
        let multicast: MacAddr = "01:00:5e:00:00:01".parse().unwrap();
        assert!(
            p.check_guest("172.16.0.2".parse().unwrap(), multicast)
                .is_err()
        );
    }

    #[test]
    fn low_and_out_of_range_ports_need_root() {
        let e = policy(false).check_ports(&[port(22)]).unwrap_err();
        assert!(e.to_string().contains("below 1024"), "{e}");
        policy(true).check_ports(&[port(22)]).unwrap();
        let narrow = Policy::new(&PolicyFile {
            publish_ports: "8000-8099".into(),
            ..PolicyFile::default()
        })
        .unwrap();
        narrow.check_ports(&[port(8080)]).unwrap();
        let e = narrow.check_ports(&[port(9000)]).unwrap_err();
        assert!(
            e.to_string().contains("outside the publishable range"),
            "{e}"
        );
        let e = narrow.check_ports(&[port(8080), port(8080)]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn a_public_network_is_refused() {
        let e = Policy::new(&PolicyFile {
            bridge_cidr: "1.1.1.1/24".parse().unwrap(),
            ..PolicyFile::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("private range"), "{e}");
    }

    #[test]
    fn the_file_round_trips() {
        let f = PolicyFile {
            bridge: "vmbr7".into(),
            bridge_cidr: "10.9.0.1/24".parse().unwrap(),
            publish_ports: "2000-3000".into(),
            allow_low_ports: true,
        };
        let back: PolicyFile = toml::from_str(&f.render()).unwrap();
        assert_eq!(back, f);
    }
}
