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
}

impl Policy {
    /// A policy whose one non-prefixed bridge is `bridge` (what root
    /// configured at install); `None` = only `banger*` bridges.
    pub fn new(bridge: Option<&str>) -> Result<Self, HelperError> {
        let bridge = bridge.unwrap_or("banger0").to_string();
        validate_ifname(&bridge)?;
        Ok(Policy { bridge })
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
            HelperOp::ApplyRules { rules } => self.check_bridge(&rules.bridge),
            // A TapName only deserializes from a banger tap name.
            HelperOp::DeleteTap { .. } => Ok(()),
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
}
