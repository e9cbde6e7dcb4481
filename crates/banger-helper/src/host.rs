//! [`HostNetwork`]: the privileged operations as one interface with two
//! implementations, [`crate::HelperClient`] (a daemon running as a user
//! asks the root helper) and [`InProcess`] (a daemon running as root, and
//! the helper itself, act directly). Both go through the same [`Policy`].
//!
//! Implementors provide [`HostNetwork::call`]; the typed methods are built
//! on it, so the two implementations cannot drift apart.

use std::future::Future;
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use banger_net::{Netlink, RuleSet, TapName, nft, sysctl};
use ipnet::Ipv4Net;
use tokio::sync::Mutex;

use crate::proto::{HelperOp, PROTOCOL_VERSION, Reply};
use crate::{HelperClient, HelperError, Policy};

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
}

/// What exists on the host now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus {
    pub bridge: bool,
    pub rules: bool,
    pub forwarding: bool,
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
            match self.call(HelperOp::Version).await?.reply {
                Reply::Version {
                    protocol,
                    version,
                    owner,
                } => Ok(HelperInfo {
                    protocol,
                    version,
                    owner,
                }),
                r => Err(unexpected(r)),
            }
        }
    }

    fn ensure_bridge(
        &self,
        name: &str,
        cidr: Ipv4Net,
    ) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::EnsureBridge {
            name: name.to_string(),
            cidr,
        }))
    }

    fn remove_bridge(&self, name: &str) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::RemoveBridge {
            name: name.to_string(),
        }))
    }

    fn create_tap(
        &self,
        vm_id: &str,
        bridge: &str,
    ) -> impl Future<Output = Result<TapName, HelperError>> + Send {
        let op = HelperOp::CreateTap {
            vm_id: vm_id.to_string(),
            bridge: bridge.to_string(),
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
            match self.call(HelperOp::ListTaps).await?.reply {
                Reply::Taps { taps } => Ok(taps),
                r => Err(unexpected(r)),
            }
        }
    }

    fn apply_rules(&self, rules: &RuleSet) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::ApplyRules {
            rules: rules.clone(),
        }))
    }

    fn remove_rules(&self) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::RemoveRules))
    }

    fn enable_forwarding(
        &self,
        bridge: &str,
    ) -> impl Future<Output = Result<(), HelperError>> + Send {
        done(self.call(HelperOp::EnableForwarding {
            bridge: bridge.to_string(),
        }))
    }

    fn bind_dns(
        &self,
        addr: SocketAddrV4,
    ) -> impl Future<Output = Result<DnsSockets, HelperError>> + Send {
        async move {
            let out = self.call(HelperOp::BindDns { addr }).await?;
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

    fn status(&self, bridge: &str) -> impl Future<Output = Result<HostStatus, HelperError>> + Send {
        let op = HelperOp::Status {
            bridge: bridge.to_string(),
        };
        async move {
            match self.call(op).await?.reply {
                Reply::Status {
                    bridge,
                    rules,
                    forwarding,
                } => Ok(HostStatus {
                    bridge,
                    rules,
                    forwarding,
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

/// The operations performed by this process, which needs CAP_NET_ADMIN
/// (and CAP_NET_BIND_SERVICE for DNS) in its network namespace.
#[derive(Debug)]
pub struct InProcess {
    nl: Netlink,
    policy: Policy,
    owner: u32,
    // One operation at a time: a rules rebuild never interleaves with a
    // bridge change.
    serial: Mutex<()>,
}

impl InProcess {
    /// Act in the calling thread's network namespace; taps are created
    /// owned by `owner`. Must be called inside a tokio runtime.
    pub fn new(policy: Policy, owner: u32) -> Result<Self, HelperError> {
        Ok(InProcess {
            nl: Netlink::connect()?,
            policy,
            owner,
            serial: Mutex::new(()),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    async fn execute(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        let nl = &self.nl;
        Ok(match op {
            HelperOp::Version => Reply::Version {
                protocol: PROTOCOL_VERSION,
                version: env!("CARGO_PKG_VERSION").to_string(),
                owner: self.owner,
            }
            .into(),
            HelperOp::EnsureBridge { name, cidr } => {
                nl.check_cidr_free(cidr, &name).await?;
                nl.ensure_bridge(&name, cidr).await?;
                Reply::Done.into()
            }
            HelperOp::RemoveBridge { name } => {
                nl.remove_bridge(&name).await?;
                Reply::Done.into()
            }
            HelperOp::CreateTap { vm_id, bridge } => {
                let tap = TapName::for_vm(&vm_id)?;
                nl.create_tap(&tap, self.owner, &bridge).await?;
                Reply::Tap { tap }.into()
            }
            HelperOp::DeleteTap { tap } => {
                nl.delete_tap(&tap).await?;
                Reply::Done.into()
            }
            HelperOp::OpenTap { tap } => {
                let fd = nl.open_tap(&tap).await?;
                Outcome {
                    reply: Reply::TapFd { tap },
                    fds: vec![fd],
                }
            }
            HelperOp::ListTaps => Reply::Taps {
                taps: nl.list_taps().await?.into_iter().map(|t| t.name).collect(),
            }
            .into(),
            HelperOp::ApplyRules { rules } => {
                nft::apply_rules(&rules).await?;
                Reply::Done.into()
            }
            HelperOp::RemoveRules => {
                nft::remove_rules().await?;
                Reply::Done.into()
            }
            HelperOp::EnableForwarding { bridge } => {
                sysctl::enable_ipv4_forwarding()?;
                sysctl::enable_route_localnet(&bridge)?;
                Reply::Done.into()
            }
            HelperOp::BindDns { addr } => self.bind_dns_sockets(addr).await?,
            HelperOp::Status { bridge } => Reply::Status {
                bridge: nl.bridge_exists(&bridge).await?,
                rules: nft::rules_present().await?,
                forwarding: sysctl::ipv4_forwarding_enabled(),
            }
            .into(),
        })
    }

    /// Bind only an address that a banger bridge carries: the helper must
    /// not become a way to grab port 53 on any address.
    async fn bind_dns_sockets(&self, addr: SocketAddrV4) -> Result<Outcome, HelperError> {
        let mut on_bridge = false;
        for link in self.nl.bridges().await? {
            if self.policy.check_bridge(&link).is_ok()
                && self
                    .nl
                    .ipv4_addresses(&link)
                    .await?
                    .iter()
                    .any(|n| n.addr() == *addr.ip())
            {
                on_bridge = true;
            }
        }
        if !on_bridge {
            return Err(HelperError::Refused(format!(
                "{} is not the address of a banger bridge",
                addr.ip()
            )));
        }
        let io = |op| move |source| HelperError::Io { op, source };
        let udp = UdpSocket::bind(addr).map_err(io("bind DNS udp for"))?;
        let tcp = TcpListener::bind(addr).map_err(io("bind DNS tcp for"))?;
        Ok(Outcome {
            reply: Reply::DnsSockets { addr },
            fds: vec![OwnedFd::from(udp), OwnedFd::from(tcp)],
        })
    }
}

impl HostNetwork for InProcess {
    async fn call(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        self.policy.check(&op)?;
        let _one = self.serial.lock().await;
        self.execute(op).await
    }
}

/// The implementation a daemon picked at start.
#[derive(Debug)]
pub enum AnyHostNetwork {
    Helper(HelperClient),
    InProcess(InProcess),
}

impl HostNetwork for AnyHostNetwork {
    async fn call(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        match self {
            AnyHostNetwork::Helper(c) => c.call(op).await,
            AnyHostNetwork::InProcess(p) => p.call(op).await,
        }
    }
}
