//! Linux host networking for banger VMs: the bridge, one persistent tap
//! per VM, banger's nftables table (NAT, isolation, published ports), the
//! two sysctls it needs, and the check that the bridge network is free.
//!
//! Owns only mechanisms; it holds no state and decides no policy about
//! who may ask (that is banger-helper's job). Everything acts on the
//! network namespace of the calling thread and needs CAP_NET_ADMIN at run
//! time. Links and addresses go through rtnetlink ([`Netlink`]), never
//! `ip`; rules go through nftables' JSON API ([`nft`]), never `iptables`.

mod bridge;
mod error;
pub mod host_ports;
mod names;
mod netlink;
pub mod nft;
mod routes;
pub mod sysctl;
mod tap;
pub mod wake;

pub use bridge::bridge_mac;
pub use error::NetError;
pub use names::{IFNAME_MAX, TAP_ID_CHARS, TAP_PREFIX, TapName, validate_ifname};
pub use netlink::Netlink;
pub use nft::{Proto, PublishedPort, RuleSet};
pub use tap::TapInfo;
