//! Published host ports as sockets: [`HeldPort`] binds the port itself
//! for as long as it is published, as docker-proxy does, so that no
//! other process can hold it (and have its connections redirected to a
//! guest by the DNAT rule) and a port another process holds is refused
//! by the kernel's own bind check, whoever the holder is.
//!
//! [`holder`] names who holds a port, from the listening TCP and bound
//! UDP sockets of `/proc/thread-self/net/{tcp,tcp6,udp,udp6}` (procfs),
//! for the error message.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use procfs::FromReadSI;
use procfs::net::{TcpNetEntries, TcpNetEntry, TcpState, UdpNetEntries};
use procfs::process::FDTarget;

use crate::{HostPort, NetError, Proto};

/// A host port bound by this process while it is published. The DNAT
/// rule sends connections to the guest before they reach this socket;
/// what it does receive (while the rules are being repaired) is closed at
/// once. Dropping it frees the port.
#[derive(Debug)]
pub struct HeldPort {
    port: HostPort,
    _udp: Option<std::net::UdpSocket>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl HeldPort {
    /// Bind `port` (TCP: listen; UDP: bind). Refused when another socket
    /// holds it, on its address or on every address. Must be called
    /// inside a tokio runtime.
    pub fn hold(port: &HostPort) -> Result<HeldPort, NetError> {
        let addr = SocketAddrV4::new(
            port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            port.host_port,
        );
        let err = |e: io::Error| match e.kind() {
            io::ErrorKind::AddrInUse => NetError::PortInUse {
                port: format!("{addr}/{}", port.proto.as_str()),
                holder: holder(port.proto, port.host_ip, port.host_port).map(|h| h.to_string()),
            },
            io::ErrorKind::AddrNotAvailable => NetError::Hold {
                port: format!("{addr}/{}", port.proto.as_str()),
                source: io::Error::new(
                    e.kind(),
                    format!("{} is not an address of this host", addr.ip()),
                ),
            },
            _ => NetError::Hold {
                port: format!("{addr}/{}", port.proto.as_str()),
                source: e,
            },
        };
        match port.proto {
            Proto::Tcp => {
                // std sets SO_REUSEADDR on listeners: that only lets this
                // bind pass TIME_WAIT leftovers, never another listener.
                let l = std::net::TcpListener::bind(addr).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                let l = tokio::net::TcpListener::from_std(l).map_err(err)?;
                let accept = tokio::spawn(async move {
                    loop {
                        match l.accept().await {
                            Ok((conn, _)) => drop(conn),
                            // Out of descriptors or the like: back off
                            // rather than spin.
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                Ok(HeldPort {
                    port: *port,
                    _udp: None,
                    accept: Some(accept),
                })
            }
            Proto::Udp => {
                // No SO_REUSEADDR: for UDP it would let others share the port.
                let s = std::net::UdpSocket::bind(addr).map_err(err)?;
                Ok(HeldPort {
                    port: *port,
                    _udp: Some(s),
                    accept: None,
                })
            }
        }
    }

    pub fn port(&self) -> &HostPort {
        &self.port
    }
}

impl Drop for HeldPort {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
    }
}

/// A socket that holds a port banger was asked to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// The socket's local address as the kernel lists it.
    pub addr: String,
    pub port: u16,
    /// `name (pid N)` of a process holding it, when /proc shows one.
    pub process: Option<String>,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)?;
        if let Some(p) = &self.process {
            write!(f, " by {p}")?;
        }
        Ok(())
    }
}

/// A socket of the tables reduced to what matters for a DNAT of IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `None`: the socket's address is IPv6 and not v4-mapped.
    v4: Option<Ipv4Addr>,
    wildcard: bool,
    text: String,
    port: u16,
    inode: u64,
}

impl Entry {
    fn new(local: SocketAddr, inode: u64) -> Entry {
        let v4 = match local.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        Entry {
            v4,
            wildcard: local.ip().is_unspecified(),
            text: local.ip().to_string(),
            port: local.port(),
            inode,
        }
    }
}

/// The first socket that would conflict with publishing `proto` port
/// `port` on `ip` (every host address when `None`); `None` when the port
/// is free. An unreadable table counts as empty: the check is a courtesy,
/// the DNAT works either way.
pub fn holder(proto: Proto, ip: Option<Ipv4Addr>, port: u16) -> Option<PortHolder> {
    let e = sockets(proto)
        .into_iter()
        .find(|e| e.port == port && conflicts(e, ip))?;
    Some(PortHolder {
        addr: e.text,
        port: e.port,
        process: process_of(e.inode),
    })
}

/// TCP sockets in LISTEN; every bound UDP socket; IPv4 and IPv6, of the
/// calling thread's network namespace.
fn sockets(proto: Proto) -> Vec<Entry> {
    let base = Path::new("/proc/thread-self/net");
    let si = procfs::current_system_info();
    match proto {
        Proto::Tcp => ["tcp", "tcp6"]
            .iter()
            .filter_map(|f| TcpNetEntries::from_file(base.join(f), si).ok())
            .flat_map(|t| listening(t.0))
            .collect(),
        Proto::Udp => ["udp", "udp6"]
            .iter()
            .filter_map(|f| UdpNetEntries::from_file(base.join(f), si).ok())
            .flat_map(|t| t.0)
            .map(|e| Entry::new(e.local_address, e.inode))
            .collect(),
    }
}

fn listening(rows: Vec<TcpNetEntry>) -> Vec<Entry> {
    rows.into_iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| Entry::new(e.local_address, e.inode))
        .collect()
}

fn conflicts(e: &Entry, ip: Option<Ipv4Addr>) -> bool {
    if e.wildcard {
        return true;
    }
    match (e.v4, ip) {
        (Some(_), None) => true,
        (Some(a), Some(b)) => a == b,
        (None, _) => false,
    }
}

/// `comm (pid N)` of a process with the socket `inode` open; best effort
/// (another user's /proc/PID/fd is unreadable to a non-root daemon).
fn process_of(inode: u64) -> Option<String> {
    for p in procfs::process::all_processes().ok()?.flatten() {
        let Ok(fds) = p.fd() else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode))
        {
            let comm = p.stat().map(|s| s.comm).unwrap_or_default();
            return Some(format!("{comm} (pid {})", p.pid));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0 0 10 0
   2: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000200000A:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0 100 0 0 10 0
";

    fn parse_table(text: &str) -> Vec<Entry> {
        use procfs::FromBufReadSI;
        let rows = TcpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info());
        listening(rows.unwrap().0)
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn tables_parse_as_the_kernel_prints_them() {
        let v4 = parse_table(TCP);
        assert_eq!(v4.len(), 2, "only listeners: {v4:?}");
        assert_eq!((v4[0].text.as_str(), v4[0].port), ("127.0.0.1", 8080));
        assert!(v4[1].wildcard && v4[1].port == 22);
        let v6 = parse_table(TCP6);
        assert!(v6[0].wildcard && v6[0].port == 8081);
        assert_eq!(v6[1].v4, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!((v6[2].v4, v6[2].text.as_str()), (None, "::1"));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn conflicts_follow_the_published_address() {
        let v4 = parse_table(TCP);
        let lo = &v4[0];
        assert!(
            conflicts(lo, None),
            "publishing on all addresses takes 127.0.0.1 too"
        );
        assert!(conflicts(lo, Some(Ipv4Addr::LOCALHOST)));
        assert!(!conflicts(lo, Some(Ipv4Addr::new(10, 0, 0, 1))));
        assert!(
            conflicts(&v4[1], Some(Ipv4Addr::new(10, 0, 0, 1))),
            "0.0.0.0"
        );
        let v6 = parse_table(TCP6);
        assert!(
            conflicts(&v6[0], Some(Ipv4Addr::LOCALHOST)),
            "[::] is dual-stack"
        );
        assert!(!conflicts(&v6[2], None), "::1 takes no IPv4");
    }

    #[test]
    fn a_real_listener_is_found_and_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = holder(Proto::Tcp, None, port).expect("the listener holds its port");
        assert_eq!((h.addr.as_str(), h.port), ("127.0.0.1", port));
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(
            h.process.as_deref().unwrap_or("").contains(me.trim()),
            "{h}"
        );
        assert!(holder(Proto::Tcp, Some(Ipv4Addr::new(10, 9, 9, 9)), port).is_none());
        drop(l);
        assert!(holder(Proto::Tcp, None, port).is_none(), "free once closed");
    }
}
