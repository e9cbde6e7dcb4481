//! The root helper: the only banger process that runs as root. It serves
//! a closed, versioned list of host-network operations ([`HelperOp`]) on a
//! Unix socket to one owner uid (and root), checks every caller with
//! SO_PEERCRED, and acts only on banger-named resources ([`Policy`]):
//! its bridge, taps named from VM ids, its own nftables table. No
//! operation takes a command or a path. It opens no database and keeps no
//! state; the daemon owns all intent.
//!
//! The same operations run in-process ([`InProcess`]) when the daemon is
//! root; both implement [`HostNetwork`], and [`AnyHostNetwork`] is the one
//! a daemon holds.

mod client;
mod error;
mod host;
pub mod policy;
pub mod proto;
pub mod server;
mod wire;

pub use client::HelperClient;
pub use error::HelperError;
pub use host::{
    AnyHostNetwork, DnsSockets, HelperInfo, HostNetwork, HostStatus, InProcess, Outcome,
};
pub use policy::{BRIDGE_PREFIX, Policy};
pub use proto::{HelperOp, PROTOCOL_VERSION, Reply};
pub use server::DEFAULT_SOCKET;
