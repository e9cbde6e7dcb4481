//! banger's DNS server, run inside the daemon: it answers A queries for
//! `<vm-name>.<domain>` (default domain `vm`) from a record map the daemon
//! edits as VMs start and stop (`DnsRecords`), and forwards every other name
//! to upstream resolvers (by default the host's, from /etc/resolv.conf).
//! Guests use it through the bridge address; the host through split DNS
//! (see banger-system).
//!
//! Clients are held to a query rate and TCP connection caps ([`Limits`]),
//! queries are logged at debug only, and an [`AnswerHook`] can see an
//! answer's addresses before the client does (egress allow lists by name).
//!
//! It owns the protocol side only: which VMs exist, and binding port 53 on
//! the bridge (a root job, done by banger-helper), belong to others. The
//! protocol itself is hickory's (`hickory-server`'s catalog and forwarder).

mod guard;
mod records;
mod server;
mod tcp;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use guard::{AnswerHook, Limits};
pub use ipnet::IpNet;
pub use records::{DnsRecords, RECORD_TTL};
pub use server::{DnsServer, ServeOptions};
pub use upstream::{
    HOST_RESOLV_CONF, host_upstreams, upstreams_from_file, upstreams_from_resolv_conf,
};

/// Why the DNS server or its records refused something.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS domain {domain:?}: {reason}")]
    InvalidDomain { domain: String, reason: String },
    #[error("invalid VM name {name:?} for DNS: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("bind DNS {proto} socket on {addr}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("use the DNS {proto} socket")]
    Adopt {
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("read {}", path.display())]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}: {reason}", path.display())]
    ParseResolvConf { path: PathBuf, reason: String },
    #[error("configure the forwarding resolver: {0}")]
    Forwarder(String),
    #[error("DNS server failed: {0}")]
    Serve(String),
}
