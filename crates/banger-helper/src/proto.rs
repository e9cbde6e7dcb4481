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

use std::net::SocketAddrV4;

use banger_net::{RuleSet, TapName};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`HelperOp`], [`Reply`] or framing.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// One privileged operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum HelperOp {
    /// Protocol and build version, and whom the helper serves.
    Version,
    /// Create or adopt the bridge with this address; refuses a network
    /// that overlaps a host route.
    EnsureBridge {
        name: String,
        cidr: Ipv4Net,
    },
    RemoveBridge {
        name: String,
    },
    /// The persistent tap of this VM (named from its id), owned by the
    /// helper's owner uid, as an up port of `bridge`.
    CreateTap {
        vm_id: String,
        bridge: String,
    },
    DeleteTap {
        tap: TapName,
    },
    /// A queue of the existing tap, handed over as a descriptor, for a
    /// VMM that takes an open tap (QEMU `-netdev tap,fd=N`).
    OpenTap {
        tap: TapName,
    },
    ListTaps,
    /// Replace banger's nft table with this desired state.
    ApplyRules {
        rules: RuleSet,
    },
    RemoveRules,
    /// IPv4 forwarding, and route_localnet on `bridge`.
    EnableForwarding {
        bridge: String,
    },
    /// Bind UDP and TCP port 53 on `addr` (an address of a banger bridge)
    /// and hand both sockets over.
    BindDns {
        addr: SocketAddrV4,
    },
    /// What exists now: bridge, table, forwarding.
    Status {
        bridge: String,
    },
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
        addr: SocketAddrV4,
    },
    Status {
        bridge: bool,
        rules: bool,
        forwarding: bool,
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
                bridge: "banger0".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"protocol":1,"op":{"op":"create_tap","vm_id":"0123456789abcdef","bridge":"banger0"}}"#
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
        let line = r#"{"protocol":1,"op":{"op":"delete_tap","tap":"eth0"}}"#;
        assert!(serde_json::from_str::<Request>(line).is_err());
        let line = r#"{"protocol":1,"op":{"op":"run","cmd":"sh"}}"#;
        assert!(serde_json::from_str::<Request>(line).is_err());
    }
}
