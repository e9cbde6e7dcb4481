//! The one error type of banger-net: every variant names the interface,
//! table or file it was about and the operation that failed, so a caller
//! can print it as one line without adding context.

use std::io;
use std::path::PathBuf;

/// A host networking failure.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A name that is not a valid, banger-owned Linux interface name.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A VM id that is not the 16 lowercase hex characters banger allocates.
    #[error("invalid vm id {id:?}: expected 16 hex characters")]
    InvalidVmId { id: String },
    /// The rtnetlink socket could not be opened.
    #[error("open rtnetlink socket")]
    Connect(#[source] io::Error),
    /// A netlink request about `name` failed.
    #[cfg(feature = "host")]
    #[error("{op} {name}")]
    Netlink {
        op: &'static str,
        name: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// `name` exists but is not a bridge, so banger refuses to adopt it.
    #[error("{name} exists but is {kind}, not a bridge; remove it or choose another bridge name")]
    NotABridge { name: String, kind: String },
    /// A bridge of that name exists but banger did not make it (its MAC is
    /// not the one banger pins): someone else's, left untouched.
    #[error(
        "{name} is a bridge banger did not create ({why}); banger leaves it alone: remove it or configure another bridge name"
    )]
    ForeignBridge { name: String, why: String },
    /// A guest network that cannot be used.
    #[error("guest network {cidr}: {reason}")]
    InvalidNetwork {
        cidr: ipnet::Ipv4Net,
        reason: String,
    },
    /// A MAC address that does not parse.
    #[error("invalid MAC address {mac:?}: expected six hex pairs like 02:00:5e:10:00:01")]
    InvalidMac { mac: String },
    /// An egress policy that cannot be expressed.
    #[error("invalid egress policy: {reason}")]
    InvalidEgress { reason: String },
    /// A host port another socket holds.
    #[error("host port {port} is in use{}", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    PortInUse {
        port: String,
        holder: Option<String>,
    },
    /// A host port banger could not hold for another reason.
    #[error("hold host port {port}")]
    Hold {
        port: String,
        #[source]
        source: io::Error,
    },
    /// The interface to act on does not exist.
    #[error("no interface named {name}")]
    NoSuchLink { name: String },
    /// A tun/tap ioctl failed.
    #[error("{op} tap {name}")]
    Tap {
        op: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    /// The bridge network overlaps a route the host already has.
    #[error("bridge network {cidr} overlaps the host route {route}{}; pick another network.bridge_cidr", dev.as_ref().map(|d| format!(" (dev {d})")).unwrap_or_default())]
    CidrOverlap {
        cidr: ipnet::Ipv4Net,
        route: ipnet::Ipv4Net,
        dev: Option<String>,
    },
    /// `nft` failed while acting on banger's table.
    #[error("nft {op} table inet {table}: {detail}")]
    Nft {
        op: &'static str,
        table: String,
        detail: String,
    },
    /// A /proc/sys write failed.
    #[error("write {}", path.display())]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NetError {
    #[cfg(feature = "host")]
    pub(crate) fn netlink(op: &'static str, name: &str, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            op,
            name: name.to_string(),
            source,
        }
    }
}

/// The errno carried by a netlink error, if it is one.
#[cfg(feature = "host")]
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
