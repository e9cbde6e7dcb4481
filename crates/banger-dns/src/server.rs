//! The running server: a hickory `Catalog` with two zones, the VM zone
//! (authoritative, from `DnsRecords`) and the root zone forwarded to the
//! upstreams, behind the per-client rate limit and answer hook of
//! [`crate::guard`], served on UDP (hickory's server) and TCP (banger's
//! capped listener, [`crate::tcp`]).
//!
//! Sockets come either from `DnsServer::bind` or, in production, from the
//! root helper: only root may bind port 53 on the bridge address, so the
//! helper binds it and hands the descriptor over (`DnsServer::from_std`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, ZoneHandler};
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tracing::warn;

use crate::guard::{AnswerHook, Guarded, Limits, Shared};
use crate::{DnsError, DnsRecords};

/// A TCP client that sends nothing for this long is dropped: TCP DNS is for
/// answers too big for UDP, not for idle connections holding a slot.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses queued per TCP connection before the writer applies
/// back-pressure (hickory's own tests use the same figure).
const TCP_RESPONSE_BUFFER: usize = 32;
/// Per-query timeout towards an upstream. A dead upstream must turn into
/// SERVFAIL before a guest's libc gives up on us (glibc waits 5 s per try):
/// hickory's default (5 s, two attempts) would leave the guest unanswered.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);

/// How a server answers beyond its zone.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Resolvers for every name outside the zone, tried in order (e.g.
    /// `host_upstreams()`); empty: such names are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// Clients allowed to ask; others get REFUSED. Empty: anyone who can
    /// reach the socket. The daemon passes the bridge network and loopback,
    /// so the forwarder is never an open resolver for whatever else routes
    /// to the bridge address.
    pub allowed_clients: Vec<IpNet>,
    /// Per-client query rate and TCP connection caps.
    pub limits: Limits,
    /// Sees the addresses of the answers it wants before the client does.
    pub hook: Option<Arc<dyn AnswerHook>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("upstreams", &self.upstreams)
            .field("allowed_clients", &self.allowed_clients)
            .field("limits", &self.limits)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The daemon's DNS server. Dropping it stops serving (its tasks are
/// aborted); `shutdown` stops gracefully.
pub struct DnsServer {
    server: Server<Shared<Catalog>>,
    tcp_task: Option<tokio::task::JoinHandle<()>>,
    records: DnsRecords,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("domain", &self.records.domain())
            .field("udp_addr", &self.udp_addr)
            .field("tcp_addr", &self.tcp_addr)
            .finish()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks a free UDP port and TCP
    /// takes the same number) and serves `records`, other names as
    /// `options` says.
    pub async fn bind(
        addr: SocketAddr,
        records: DnsRecords,
        options: &ServeOptions,
    ) -> Result<Self, DnsError> {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "UDP",
                addr,
                source,
            })?;
        let udp_addr = udp.local_addr().map_err(adopt("UDP"))?;
        let tcp = TcpListener::bind(udp_addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "TCP",
                addr: udp_addr,
                source,
            })?;
        Self::serve(udp, Some(tcp), records, options)
    }

    /// Serves on sockets bound elsewhere (by the root helper, which hands
    /// over at least the UDP one). Must be called inside a tokio runtime.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
        records: DnsRecords,
        options: &ServeOptions,
    ) -> Result<Self, DnsError> {
        // tokio requires non-blocking descriptors; one passed over a Unix
        // socket keeps whatever mode its sender gave it.
        udp.set_nonblocking(true).map_err(adopt("UDP"))?;
        let udp = UdpSocket::from_std(udp).map_err(adopt("UDP"))?;
        let tcp = match tcp {
            Some(listener) => {
                listener.set_nonblocking(true).map_err(adopt("TCP"))?;
                Some(TcpListener::from_std(listener).map_err(adopt("TCP"))?)
            }
            None => None,
        };
        Self::serve(udp, tcp, records, options)
    }

    fn serve(
        udp: UdpSocket,
        tcp: Option<TcpListener>,
        records: DnsRecords,
        options: &ServeOptions,
    ) -> Result<Self, DnsError> {
        let udp_addr = udp.local_addr().map_err(adopt("UDP"))?;
        let tcp_addr = match &tcp {
            Some(l) => Some(l.local_addr().map_err(adopt("TCP"))?),
            None => None,
        };
        // Forwarding to ourselves would loop each query until it times out.
        let upstreams: Vec<SocketAddr> = options
            .upstreams
            .iter()
            .copied()
            .filter(|u| {
                let own = *u == udp_addr || Some(*u) == tcp_addr;
                if own {
                    warn!(upstream = %u, "ignoring an upstream that is this DNS server");
                }
                !own
            })
            .collect();

        let mut catalog = Catalog::new();
        let zone: Arc<dyn ZoneHandler> = Arc::new(records.zone());
        catalog.upsert(records.origin().clone(), vec![zone]);
        if !upstreams.is_empty() {
            let forwarder: Arc<dyn ZoneHandler> = Arc::new(forwarder(&upstreams)?);
            catalog.upsert(LowerName::new(&Name::root()), vec![forwarder]);
        }

        let guarded = Arc::new(Guarded::new(catalog, options.limits, options.hook.clone()));
        let mut server = Server::with_access(
            Shared(guarded.clone()),
            [],
            options.allowed_clients.iter().copied(),
        );
        server.register_socket(udp);
        let tcp_task = tcp.map(|listener| {
            tokio::spawn(crate::tcp::serve(
                listener,
                guarded,
                options.limits,
                options.allowed_clients.clone(),
                TCP_IDLE_TIMEOUT,
                TCP_RESPONSE_BUFFER,
            ))
        });
        Ok(Self {
            server,
            tcp_task,
            records,
            udp_addr,
            tcp_addr,
        })
    }

    /// The record map this server answers from (a clone of the one given).
    pub fn records(&self) -> &DnsRecords {
        &self.records
    }

    /// Where it listens on UDP.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Where it listens on TCP, when it does.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops accepting queries and waits for the serving tasks to end.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        if let Some(t) = self.tcp_task.take() {
            t.abort();
        }
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Serve(e.to_string()))
    }
}

/// A forwarding zone for the root: every name outside the VM domain goes to
/// the upstreams, over UDP with TCP for truncated answers, and is cached by
/// hickory's resolver.
fn forwarder(upstreams: &[SocketAddr]) -> Result<ForwardZoneHandler, DnsError> {
    let name_servers = upstreams
        .iter()
        .map(|u| {
            let mut udp = ConnectionConfig::udp();
            udp.port = u.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = u.port();
            NameServerConfig::new(u.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = UPSTREAM_TIMEOUT;
    let config = ForwardConfig {
        name_servers,
        options: Some(options),
    };
    ForwardZoneHandler::builder_tokio(config)
        .build()
        .map_err(DnsError::Forwarder)
}

/// The error for a socket the server was given (or bound) but cannot use.
fn adopt(proto: &'static str) -> impl Fn(std::io::Error) -> DnsError {
    move |source| DnsError::Adopt { proto, source }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(t) = self.tcp_task.take() {
            t.abort();
        }
    }
}
