//! The helper's wire protocol: one JSON object per line over a Unix
//! stream socket. Each request carries the protocol version; the helper
//! answers a request of another version with a `version_mismatch` error
//! before it even parses the operation, so a daemon and a helper from
//! different banger releases fail with a clear message, never a confusing
//! parse error. File descriptors (the DNS sockets) travel as SCM_RIGHTS
//! ancillary data on the response line.
//!
//! [`HelperOp`] is the whole privileged surface: a closed list, each
//! variant naming banger resources only; none takes a command or a path.

use std::net::Ipv4Addr;

use banger_net::{Egress, GuestNet, HostPort, MacAddr, PortRange, Resolved, TapName};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`HelperOp`], [`Reply`] or framing.
/// 2: the network is the helper's own (requests name none), guests are
/// bound to an address and MAC, ports and egress travel with the tap.
pub const PROTOCOL_VERSION: u32 = 2;

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// One privileged operation. None names a network, a bridge or a
/// forwarding target: those are the helper's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum HelperOp {
    /// Protocol and build version, whom the helper serves, and its network.
    Version {},
    /// Create or adopt the helper's bridge with its address (refusing a
    /// bridge banger did not make, and a network that overlaps a host
    /// route), turn on IPv4 forwarding, write both nft tables.
    EnsureNetwork {},
    /// Remove the tables and the bridge, and put forwarding back as it
    /// was; refused while banger taps exist.
    RemoveNetwork {},
    /// The persistent tap of this VM (named from its id), owned by the
    /// helper's owner uid, an up port of the bridge, bound to `ip` and
    /// `mac`: the only source addresses it may send from. Its egress
    /// policy and published ports come with it (each published port is
    /// held by the helper while the tap exists). Asking again with the
    /// same binding is a no-op; with other ports or egress, an update.
    CreateTap {
        vm_id: String,
        ip: Ipv4Addr,
        mac: MacAddr,
        #[serde(default)]
        egress: Egress,
        #[serde(default)]
        ports: Vec<HostPort>,
    },
    /// Delete the tap with everything bound to it.
    DeleteTap {
        tap: TapName,
    },
    /// A queue of the existing tap, handed over as a descriptor, for a
    /// VMM that takes an open tap (QEMU `-netdev tap,fd=N`).
    OpenTap {
        tap: TapName,
    },
    ListTaps {},
    /// Addresses a DNS answer gave for a name on the tap's allow list.
    AllowResolved {
        tap: TapName,
        answers: Vec<Resolved>,
    },
    /// Bind UDP and TCP port 53 on the bridge address and hand both
    /// sockets over.
    BindDns {},
    /// What exists now: bridge, tables (compared with what they should
    /// hold), forwarding.
    Status {},
}

/// The answer to one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Version {
        protocol: u32,
        version: String,
        /// The uid served besides root.
        owner: u32,
        /// The network this helper runs (its configuration).
        network: GuestNet,
        /// The host ports its owner may publish.
        publish_ports: PortRange,
        allow_low_ports: bool,
    },
    Done,
    Tap {
        tap: TapName,
    },
    Taps {
        taps: Vec<TapName>,
    },
    /// One descriptor follows the line: the tap queue.
    TapFd {
        tap: TapName,
    },
    /// Two descriptors follow the line: the UDP socket, then the TCP listener.
    DnsSockets {
        addr: std::net::SocketAddrV4,
    },
    Status {
        bridge: bool,
        tables: TableState,
        forwarding: bool,
        /// Guests bound now.
        guests: usize,
        /// Times the tables were found changed by someone else and
        /// restored since the helper started.
        repairs: u64,
    },
}

/// How the kernel's tables compare with what the helper wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum TableState {
    /// The network is not up: no tables are wanted.
    NotWanted,
    Matches,
    Missing,
    Differs {
        detail: String,
    },
}

/// One request line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub protocol: u32,
    pub op: HelperOp,
}

/// Why the helper did not do it, as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller's uid is neither the owner nor root.
    Forbidden,
    /// The operation names something that is not banger's.
    Refused,
    /// The request speaks another protocol version.
    VersionMismatch,
    /// The request could not be parsed.
    BadRequest,
    /// The operation was allowed but failed.
    Failed,
}

/// An error line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    /// The helper's protocol version, so a mismatch names both sides.
    pub protocol: u32,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Err(WireError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shape is the compatibility contract: a change here must
    /// come with a PROTOCOL_VERSION bump.
    #[test]
    fn wire_shapes_are_stable() {
        let req = Request {
            protocol: PROTOCOL_VERSION,
            op: HelperOp::CreateTap {
                vm_id: "0123456789abcdef".into(),
                ip: "172.16.0.2".parse().unwrap(),
                mac: "02:01:23:45:67:89".parse().unwrap(),
                egress: Egress::None,
                ports: vec![],
            },
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"protocol":2,"op":{"op":"create_tap","vm_id":"0123456789abcdef","ip":"172.16.0.2","mac":"02:01:23:45:67:89","egress":{"mode":"none"},"ports":[]}}"#
        );
        let resp = Response::Ok(Reply::Tap {
            tap: TapName::parse("bgt0123456789ab").unwrap(),
        });
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"ok":{"reply":"tap","tap":"bgt0123456789ab"}}"#
        );
        let err = Response::Err(WireError {
            kind: ErrorKind::Refused,
            message: "m".into(),
            protocol: 1,
        });
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"err":{"kind":"refused","message":"m","protocol":1}}"#
        );
    }

    #[test]
    fn a_foreign_tap_name_does_not_parse() {
        let line = r#"{"protocol":2,"op":{"op":"delete_tap","tap":"eth0"}}"#;
        assert!(serde_json::from_str::<Request>(line).is_err());
        let line = r#"{"protocol":2,"op":{"op":"run","cmd":"sh"}}"#;
        assert!(serde_json::from_str::<Request>(line).is_err());
        // A request may not name a network: the helper's is its own.
        let line = r#"{"protocol":2,"op":{"op":"ensure_network","cidr":"1.1.1.1/32"}}"#;
        assert!(serde_json::from_str::<Request>(line).is_err());
    }
}
