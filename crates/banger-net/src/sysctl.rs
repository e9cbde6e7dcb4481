//! The kernel switches banger's networking needs, written through
//! `/proc/sys` of the calling thread's network namespace: IPv4 forwarding
//! (guests' traffic is routed through the host; its value before is
//! returned so it can be restored, and so the nft guard keeps a host that
//! did not route from routing), `route_localnet` on the bridge alone
//! (published ports answering on 127.0.0.1, see [`crate::nft`]), and IPv6
//! off on the bridge and the taps (guests get no IPv6, so neither a
//! guest's router advertisement nor its neighbour discovery reach
//! anything). IPv6 forwarding is left alone.

use std::fs;
use std::path::PathBuf;

use crate::{NetError, validate_ifname};

fn write_one(path: PathBuf) -> Result<(), NetError> {
    // Writing ip_forward resets per-interface settings even when the value
    // is unchanged, so write only when needed.
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    fs::write(&path, "1\n").map_err(|source| NetError::Sysctl { path, source })
}

/// `net.ipv4.ip_forward = 1`; returns whether it was on already.
pub fn enable_ipv4_forwarding() -> Result<bool, NetError> {
    let was = ipv4_forwarding_enabled();
    write_one(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))?;
    Ok(was)
}

/// `net.ipv4.ip_forward = 0`, to put back what banger found.
pub fn disable_ipv4_forwarding() -> Result<(), NetError> {
    let path = PathBuf::from("/proc/sys/net/ipv4/ip_forward");
    if !ipv4_forwarding_enabled() {
        return Ok(());
    }
    fs::write(&path, "0\n").map_err(|source| NetError::Sysctl { path, source })
}

/// `net.ipv6.conf.<ifname>.disable_ipv6 = 1`; nothing to do on a kernel
/// without IPv6.
pub fn disable_ipv6(ifname: &str) -> Result<(), NetError> {
    validate_ifname(ifname)?;
    let path = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"));
    if !path.exists() {
        return Ok(());
    }
    write_one(path)
}

/// `net.ipv4.conf.<bridge>.route_localnet = 1`.
pub fn enable_route_localnet(bridge: &str) -> Result<(), NetError> {
    validate_ifname(bridge)?;
    write_one(PathBuf::from(format!(
        "/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
    )))
}

/// Whether IPv4 forwarding is on (for doctor and status).
pub fn ipv4_forwarding_enabled() -> bool {
    fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1")
}
