//! The root helper: the only banger process that runs as root. It serves
//! a closed, versioned list of host-network operations ([`HelperOp`]) on a
//! Unix socket to one owner uid (and root), checks every caller with
//! SO_PEERCRED, and acts only on its own resources under its own policy
//! ([`Policy`], root's configuration): its bridge and guest network, taps
//! named from VM ids and bound to one address and MAC each, its own
//! nftables tables, the host ports it holds. No operation takes a
//! command, a path or a network. It opens no database; what it keeps
//! ([`state`]) is which guests it bound, so a restart keeps them.
//!
//! The same operations run in-process ([`InProcess`]) when the daemon is
//! root; both implement [`HostNetwork`], and [`AnyHostNetwork`] is the one
//! a daemon holds.

//!
//! Without the `host` feature (on by default) the crate is the protocol,
//! the policy file, the saved state and the client: what the `banger` CLI
//! links, with no netlink or nftables code.

mod client;
mod error;
mod host;
#[cfg(feature = "host")]
mod inprocess;
pub mod policy;
pub mod proto;
#[cfg(feature = "host")]
pub mod server;
pub mod state;
mod wire;

/// Where the helper listens unless told otherwise: the runtime directory
/// its systemd unit gets (`RuntimeDirectory=banger-helper`), and where a
/// daemon looks when nothing names another socket.
pub const DEFAULT_SOCKET: &str = "/run/banger-helper/helper.sock";

pub use client::HelperClient;
pub use error::HelperError;
pub use host::{
    AnyHostNetwork, DnsSockets, GuestSpec, HelperInfo, HostNetwork, HostStatus, Outcome,
};
#[cfg(feature = "host")]
pub use inprocess::InProcess;
pub use policy::{Policy, PolicyFile};
pub use proto::{HelperOp, PROTOCOL_VERSION, Reply, TableState};
