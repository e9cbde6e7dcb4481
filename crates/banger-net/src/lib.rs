//! Linux host networking for banger VMs: the bridge, one persistent tap
//! per VM, banger's nftables tables (NAT, isolation, anti-spoofing,
//! egress, published ports) and the watch on them, the sockets that hold
//! published host ports, the sysctls it needs, and the check that the
//! bridge network is free.
//!
//! Owns only mechanisms; it holds no state and decides no policy about
//! who may ask (that is banger-helper's job). Everything acts on the
//! network namespace of the calling thread and needs CAP_NET_ADMIN at run
//! time. Links and addresses go through rtnetlink ([`Netlink`]), never
//! `ip`; rules go through nftables' JSON API ([`nft`]), never `iptables`.

//!
//! Without the `host` feature (on by default) only the vocabulary is built
//! (names, guests, egress, ports, errors): what a client of the root helper
//! needs, with no netlink or nftables code. The `banger` CLI uses it so.

#[cfg(feature = "host")]
mod bridge;
mod error;
pub mod guest;
#[cfg(feature = "host")]
pub mod host_ports;
#[cfg(feature = "host")]
pub mod monitor;
mod names;
#[cfg(feature = "host")]
mod netlink;
#[cfg(feature = "host")]
pub mod nft;
#[cfg(feature = "host")]
mod routes;
#[cfg(feature = "host")]
pub mod sysctl;
#[cfg(feature = "host")]
mod tap;
pub mod wake;

pub use error::NetError;
pub use guest::{
    AllowRule, AllowTarget, Egress, Guest, GuestNet, HostPort, MacAddr, PortRange, Proto, Resolved,
};
#[cfg(feature = "host")]
pub use host_ports::HeldPort;
pub use names::{
    IFNAME_MAX, TABLE as NFT_TABLE, TAP_ID_CHARS, TAP_PREFIX, TapName, bridge_mac, validate_ifname,
};
#[cfg(feature = "host")]
pub use netlink::Netlink;
#[cfg(feature = "host")]
pub use nft::{RuleSet, TableCheck};
#[cfg(feature = "host")]
pub use tap::TapInfo;
