//! `ports`: the guest's listening sockets, from the kernel's TCP and UDP
//! socket tables, each matched to its process through the socket inode
//! found among `/proc/*/fd` links (both read with procfs).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use banger_proto::ListeningPort;
use procfs::net::{TcpNetEntry, TcpState, UdpNetEntry, UdpState};
use procfs::process::FDTarget;
use procfs::{ProcError, ProcResult};

pub fn list() -> io::Result<Vec<ListeningPort>> {
    let mut found = Vec::new();
    found.extend(listening_tcp("tcp", table(procfs::net::tcp())?));
    found.extend(listening_tcp("tcp6", table(procfs::net::tcp6())?));
    found.extend(bound_udp("udp", table(procfs::net::udp())?));
    found.extend(bound_udp("udp6", table(procfs::net::udp6())?));
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let owners = socket_owners();
    Ok(found
        .into_iter()
        .map(|(mut p, inode)| {
            if let Some((pid, name)) = owners.get(&inode) {
                p.pid = Some(*pid);
                p.process = Some(name.clone());
            }
            p
        })
        .collect())
}

/// A socket table; a missing one (no IPv6 in this kernel) is empty.
fn table<T>(read: ProcResult<Vec<T>>) -> io::Result<Vec<T>> {
    match read {
        Ok(t) => Ok(t),
        Err(ProcError::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

fn port(proto: &str, local: SocketAddr) -> ListeningPort {
    ListeningPort {
        proto: proto.to_owned(),
        address: local.ip().to_string(),
        port: local.port(),
        pid: None,
        process: None,
    }
}

/// The listening TCP sockets, with their inodes.
fn listening_tcp(proto: &str, rows: Vec<TcpNetEntry>) -> Vec<(ListeningPort, u64)> {
    rows.into_iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| (port(proto, e.local_address), e.inode))
        .collect()
}

/// The bound UDP sockets that serve: unconnected ones (a UDP socket
/// "connected" to a peer is a client).
fn bound_udp(proto: &str, rows: Vec<UdpNetEntry>) -> Vec<(ListeningPort, u64)> {
    rows.into_iter()
        .filter(|e| e.state == UdpState::Close && e.remote_address.port() == 0)
        .map(|e| (port(proto, e.local_address), e.inode))
        .collect()
}

/// Socket inode -> (pid, comm) for every process we can look into.
fn socket_owners() -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::new();
    let Ok(procs) = procfs::process::all_processes() else {
        return owners;
    };
    for p in procs.flatten() {
        let Ok(fds) = p.fd() else {
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let FDTarget::Socket(inode) = fd.target else {
                continue;
            };
            let name = comm.get_or_insert_with(|| p.stat().map(|s| s.comm).unwrap_or_default());
            let pid = u32::try_from(p.pid).unwrap_or_default();
            owners.entry(inode).or_insert((pid, name.clone()));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromBufReadSI;
    use procfs::net::{TcpNetEntries, UdpNetEntries};

    fn tcp_rows(text: &str) -> Vec<TcpNetEntry> {
        TcpNetEntries::from_buf_read(text.as_bytes(), procfs::current_system_info())
            .unwrap()
            .0
    }

    #[test]
    fn keeps_listening_tcp_and_unconnected_udp_only() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1236 1 0 100 0 0 10 0
";
        let rows = listening_tcp("tcp", tcp_rows(tcp));
        let got: Vec<(String, u16, u64)> = rows
            .iter()
            .map(|(p, i)| (p.address.clone(), p.port, *i))
            .collect();
        assert_eq!(
            got,
            [
                ("0.0.0.0".to_string(), 22, 1234),
                ("127.0.0.1".to_string(), 8080, 1235)
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0 100 0 0 10 0
";
        let rows = listening_tcp("tcp6", tcp_rows(tcp6));
        assert_eq!(rows[0].0.address, "::");
        assert_eq!(rows[0].0.port, 80);
        assert_eq!(rows[1].0.address, "::1");
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 501 2 0000000000000000 0
  2: 0100007F:9C40 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 502 2 0000000000000000 0
";
        let rows =
            UdpNetEntries::from_buf_read(udp.as_bytes(), procfs::current_system_info()).unwrap();
        let bound = bound_udp("udp", rows.0);
        assert_eq!(bound.len(), 1, "the connected client socket is left out");
        assert_eq!((bound[0].0.port, bound[0].1), (53, 501));
    }

    /// The host running the tests has listening sockets of its own; at
    /// least the parser must accept the real files.
    #[test]
    fn reads_this_machines_tables() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ports = list().unwrap();
        let me = ports
            .iter()
            .find(|p| p.proto == "tcp" && p.port == port)
            .expect("our own listener is listed");
        assert_eq!(me.address, "127.0.0.1");
        assert_eq!(me.pid, Some(std::process::id()));
    }
}
