//! What the helper may touch: banger's bridge, banger's taps, banger's nft
//! table, and nothing else. Every operation passes [`Policy::check`]
//! before it acts, in the helper and in-process alike.

use banger_net::{TapName, validate_ifname};

use crate::HelperError;
use crate::proto::HelperOp;

/// Every bridge banger creates is named with this prefix (the default is
/// `banger0`) unless the helper was started with another name.
pub const BRIDGE_PREFIX: &str = "banger";

/// The allowed names.
#[derive(Debug, Clone)]
pub struct Policy {
    bridge: String,
    allow_low_ports: bool,
}

impl Policy {
    /// A policy whose one non-prefixed bridge is `bridge` (what root
    /// configured at install); `None` = only `banger*` bridges.
    pub fn new(bridge: Option<&str>) -> Result<Self, HelperError> {
        let bridge = bridge.unwrap_or("banger0").to_string();
        validate_ifname(&bridge)?;
        Ok(Policy {
            bridge,
            allow_low_ports: false,
        })
    }

    /// Whether host ports below 1024 may be published. Off by default: a
    /// DNAT of port 22 to a guest would hand the owner every SSH
    /// connection to the host, which is root's decision, not the owner's.
    pub fn allow_low_ports(mut self, allow: bool) -> Self {
        self.allow_low_ports = allow;
        self
    }

    /// The configured bridge name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Refuse an interface name that is not a banger bridge. Tap names are
    /// never bridges, so a tap cannot be "removed as a bridge".
    pub fn check_bridge(&self, name: &str) -> Result<(), HelperError> {
        validate_ifname(name)?;
        let ours = name == self.bridge
            || (name.starts_with(BRIDGE_PREFIX) && name.len() > BRIDGE_PREFIX.len());
        if !ours || TapName::parse(name).is_ok() {
            return Err(HelperError::Refused(format!(
                "{name} is not a banger bridge (expected {} or a name starting with {BRIDGE_PREFIX})",
                self.bridge
            )));
        }
        Ok(())
    }

    /// Check every interface an operation names.
    pub fn check(&self, op: &HelperOp) -> Result<(), HelperError> {
        match op {
            HelperOp::EnsureBridge { name, .. }
            | HelperOp::RemoveBridge { name }
            | HelperOp::EnableForwarding { bridge: name }
            | HelperOp::Status { bridge: name }
            | HelperOp::CreateTap { bridge: name, .. } => self.check_bridge(name),
            HelperOp::ApplyRules { rules } => {
                self.check_bridge(&rules.bridge)?;
                match rules.ports.iter().find(|p| p.host_port < 1024) {
                    Some(p) if !self.allow_low_ports => Err(HelperError::Refused(format!(
                        "host port {} is below 1024; publishing it needs the helper started with --allow-low-ports",
                        p.host_port
                    ))),
                    _ => Ok(()),
                }
            }
            // A TapName only deserializes from a banger tap name.
            HelperOp::DeleteTap { .. } | HelperOp::OpenTap { .. } => Ok(()),
            HelperOp::BindDns { addr } if addr.port() != 53 => Err(HelperError::Refused(format!(
                "BindDns binds port 53 only, not {}",
                addr.port()
            ))),
            HelperOp::BindDns { .. }
            | HelperOp::Version
            | HelperOp::ListTaps
            | HelperOp::RemoveRules => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_banger_bridges_pass() {
        let p = Policy::new(Some("vmbr7")).unwrap();
        for ok in ["vmbr7", "banger0", "bangert1"] {
            p.check_bridge(ok).unwrap();
        }
        for bad in [
            "eth0",
            "lo",
            "banger",
            "docker0",
            "bgt0123456789ab",
            "vmbr8",
        ] {
            let e = p.check_bridge(bad).unwrap_err();
            assert!(e.to_string().contains("not a banger bridge"), "{bad}: {e}");
        }
        let dns = HelperOp::BindDns {
            addr: "172.16.0.1:22".parse().unwrap(),
        };
        assert!(p.check(&dns).is_err());
    }

    #[test]
    fn low_host_ports_need_root_consent() {
        let rules = banger_net::RuleSet {
            bridge: "banger0".into(),
            cidr: "172.16.0.1/24".parse().unwrap(),
            ports: vec![banger_net::PublishedPort {
                proto: banger_net::Proto::Tcp,
                host_ip: None,
                host_port: 22,
                guest_ip: "172.16.0.2".parse().unwrap(),
                guest_port: 22,
            }],
        };
        let op = HelperOp::ApplyRules { rules };
        let e = Policy::new(None).unwrap().check(&op).unwrap_err();
        assert!(e.to_string().contains("below 1024"), "{e}");
        Policy::new(None)
            .unwrap()
            .allow_low_ports(true)
            .check(&op)
            .unwrap();
    }
}
