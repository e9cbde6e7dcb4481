//! [`HostNetwork`]: the privileged operations as one interface with two
//! implementations, [`crate::HelperClient`] (a daemon running as a user
//! asks the root helper) and [`crate::InProcess`] (a daemon running as
//! root, and the helper itself, act directly). Both go through the same
//! [`crate::Policy`].
//!
//! Implementors provide [`HostNetwork::call`]; the typed methods are built
//! on it, so the two implementations cannot drift apart.

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use banger_net::{Egress, GuestNet, HostPort, MacAddr, PortRange, Resolved, TapName};

#[cfg(feature = "host")]
use crate::InProcess;
use crate::proto::{HelperOp, Reply, TableState};
use crate::{HelperClient, HelperError};

/// The result of one operation: the reply and any descriptors it carries.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub fds: Vec<OwnedFd>,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome {
            reply,
            fds: Vec::new(),
        }
    }
}

/// The DNS sockets on the bridge address, in blocking mode (call
/// `set_nonblocking(true)` before handing them to tokio).
#[derive(Debug)]
pub struct DnsSockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

/// What the helper reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperInfo {
    pub protocol: u32,
    pub version: String,
    pub owner: u32,
    pub network: GuestNet,
    pub publish_ports: PortRange,
    pub allow_low_ports: bool,
}

/// What exists on the host now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub bridge: bool,
    pub tables: TableState,
    pub forwarding: bool,
    pub guests: usize,
    pub repairs: u64,
}

/// A guest as the daemon asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    pub vm_id: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub egress: Egress,
    pub ports: Vec<HostPort>,
}

fn unexpected(reply: Reply) -> HelperError {
    HelperError::Protocol(format!("unexpected reply {reply:?}"))
}

/// The privileged host-network operations.
pub trait HostNetwork: Send + Sync {
    /// Perform one operation.
    fn call(&self, op: HelperOp) -> impl Future<Output = Result<Outcome, HelperError>> + Send;

    fn version(&self) -> impl Future<Output = Result<HelperInfo, HelperError>> + Send {
        async move {
            match self.call(HelperOp::Version {}).await?.reply {
                Reply::Version {
                    protocol,
                    version,
                    owner,
                    network,
                    publish_ports,
                    allow_low_ports,
                } => Ok(HelperInfo {
                    protocol,
                    version,
                    owner,
                    network,
                    publish_ports,
                    allow_low_ports,
                }),
                r => Err(unexpected(r)),
            }
        }
    }

    fn ensure_network(&self) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::EnsureNetwork {}))
    }

    fn remove_network(&self) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::RemoveNetwork {}))
    }

    fn create_tap(
        &self,
        guest: &GuestSpec,
    ) -> impl Future<Output = Result<TapName, HelperError>> + Send {
        let op = HelperOp::CreateTap {
            vm_id: guest.vm_id.clone(),
            ip: guest.ip,
            mac: guest.mac,
            egress: guest.egress.clone(),
            ports: guest.ports.clone(),
        };
        async move {
            match self.call(op).await?.reply {
                Reply::Tap { tap } => Ok(tap),
                r => Err(unexpected(r)),
            }
        }
    }

    fn delete_tap(&self, tap: &TapName) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::DeleteTap { tap: tap.clone() }))
    }

    fn open_tap(&self, tap: &TapName) -> impl Future<Output = Result<OwnedFd, HelperError>> + Send {
        let op = HelperOp::OpenTap { tap: tap.clone() };
        async move {
            let out = self.call(op).await?;
            match (out.reply, <[OwnedFd; 1]>::try_from(out.fds)) {
                (Reply::TapFd { .. }, Ok([fd])) => Ok(fd),
                (Reply::TapFd { .. }, Err(fds)) => Err(HelperError::Protocol(format!(
                    "expected 1 tap descriptor, got {}",
                    fds.len()
                ))),
                (r, _) => Err(unexpected(r)),
            }
        }
    }

    fn list_taps(&self) -> impl Future<Output = Result<Vec<TapName>, HelperError>> + Send {
        async move {
            match self.call(HelperOp::ListTaps {}).await?.reply {
                Reply::Taps { taps } => Ok(taps),
                r => Err(unexpected(r)),
            }
        }
    }

    fn allow_resolved(
        &self,
        tap: &TapName,
        answers: Vec<Resolved>,
    ) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::AllowResolved {
            tap: tap.clone(),
            answers,
        }))
    }

    fn bind_dns(&self) -> impl Future<Output = Result<DnsSockets, HelperError>> + Send {
        async move {
            let out = self.call(HelperOp::BindDns {}).await?;
            match (out.reply, <[OwnedFd; 2]>::try_from(out.fds)) {
                (Reply::DnsSockets { .. }, Ok([udp, tcp])) => Ok(DnsSockets {
                    udp: UdpSocket::from(udp),
                    tcp: TcpListener::from(tcp),
                }),
                (Reply::DnsSockets { .. }, Err(fds)) => Err(HelperError::Protocol(format!(
                    "expected 2 DNS sockets, got {}",
                    fds.len()
                ))),
                (r, _) => Err(unexpected(r)),
            }
        }
    }

    fn status(&self) -> impl Future<Output = Result<HostStatus, HelperError>> + Send {
        async move {
            match self.call(HelperOp::Status {}).await?.reply {
                Reply::Status {
                    bridge,
                    tables,
                    forwarding,
                    guests,
                    repairs,
                } => Ok(HostStatus {
                    bridge,
                    tables,
                    forwarding,
                    guests,
                    repairs,
                }),
                r => Err(unexpected(r)),
            }
        }
    }
}

async fn done(f: impl Future<Output = Result<Outcome, HelperError>>) -> Result<(), HelperError> {
    match f.await?.reply {
        Reply::Done => Ok(()),
        r => Err(unexpected(r)),
    }
}

/// The implementation a daemon picked at start.
#[derive(Debug)]
pub enum AnyHostNetwork {
    Helper(HelperClient),
    #[cfg(feature = "host")]
    InProcess(InProcess),
}

impl HostNetwork for AnyHostNetwork {
    async fn call(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        match self {
            AnyHostNetwork::Helper(c) => c.call(op).await,
            #[cfg(feature = "host")]
            AnyHostNetwork::InProcess(p) => p.call(op).await,
        }
    }
}
