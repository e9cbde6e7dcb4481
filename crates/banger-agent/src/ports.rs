//! `ports`: the guest's listening sockets, from `/proc/net/{tcp,tcp6,udp,
//! udp6}`, each matched to its process through the socket inode found
//! among `/proc/*/fd` links.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use banger_proto::ListeningPort;

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const TCP_LISTEN: &str = "0A";
/// TCP_CLOSE: what an unconnected (bound, listening) UDP socket shows.
const UDP_UNCONNECTED: &str = "07";

pub fn list() -> io::Result<Vec<ListeningPort>> {
    let mut found = Vec::new();
    for (proto, state) in [
        ("tcp", TCP_LISTEN),
        ("tcp6", TCP_LISTEN),
        ("udp", UDP_UNCONNECTED),
        ("udp6", UDP_UNCONNECTED),
    ] {
        let path = format!("/proc/net/{proto}");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("read {path}: {e}"))),
        };
        found.extend(parse(proto, state, &text));
    }
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

/// The listening rows of one `/proc/net` table, with their inodes.
fn parse(proto: &str, state: &str, text: &str) -> Vec<(ListeningPort, u64)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if f.len() < 10 || f[3] != state {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(address), Ok(port), Ok(inode)) = (
            decode_addr(addr),
            u16::from_str_radix(port, 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        // A UDP socket "connected" to a peer is a client, not a server.
        if proto.starts_with("udp") && !f[2].trim_start_matches('0').starts_with(':') {
            continue;
        }
        out.push((
            ListeningPort {
                proto: proto.to_owned(),
                address,
                port,
                pid: None,
                process: None,
            },
            inode,
        ));
    }
    out
}

/// The kernel prints addresses as 32-bit words in host (little-endian)
/// byte order, each as 8 hex digits.
fn decode_addr(hex: &str) -> Option<String> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()),
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            Some(Ipv6Addr::from(a).to_string())
        }
        _ => None,
    }
}

/// Socket inode -> (pid, comm) for every process we can look into.
fn socket_owners() -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return owners;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let name = comm.get_or_insert_with(|| {
                fs::read_to_string(p.path().join("comm"))
                    .map(|s| s.trim_end().to_owned())
                    .unwrap_or_default()
            });
            owners.entry(inode).or_insert((pid, name.clone()));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_rows_only() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1236 1 0 100 0 0 10 0
";
        let rows = parse("tcp", TCP_LISTEN, tcp);
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
        let rows = parse("tcp6", TCP_LISTEN, tcp6);
        assert_eq!(rows[0].0.address, "::");
        assert_eq!(rows[0].0.port, 80);
        assert_eq!(rows[1].0.address, "::1");
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
