//! Notice when someone else changes banger's nftables tables: a netlink
//! socket subscribed to `NFNLGRP_NFTABLES`, the multicast group on which
//! the kernel announces every committed nftables transaction (`nft
//! monitor` listens to the same). Each transaction's messages name the
//! tables they touch and end with a `NEWGEN` message naming the process
//! that committed it; a transaction that touched a `banger` table and was
//! not committed by this process or an `nft` it ran ([`crate::nft::ours`])
//! is reported: `systemctl restart nftables` (whose ruleset starts with
//! `flush ruleset`), `nft flush ruleset`, a rule deleted by hand.
//!
//! The socket belongs to the network namespace of the thread that calls
//! [`watch`]; the reading happens on a thread of its own, which ends when
//! the receiver of the reports is dropped (at the next event) or the
//! socket fails.

use std::io;
use std::thread::JoinHandle;

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use tokio::sync::mpsc;

use crate::nft::{TABLE, ours};

/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWGEN`: the end of a committed transaction.
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFTA_GEN_PROC_PID`.
const NFTA_GEN_PROC_PID: u16 = 2;
/// Attribute 1 of every table, chain, rule, set, element, object and
/// flowtable message names the table.
const NFTA_TABLE: u16 = 1;
/// `NFPROTO_INET`, `NFPROTO_BRIDGE`.
const FAMILIES: [u8; 2] = [1, 7];

/// Why the watcher woke its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A transaction of process `pid` touched a banger table.
    Foreign { pid: u32 },
    /// Events were lost (the socket's buffer overflowed): anything may
    /// have happened.
    Lost,
}

/// Watch nftables in the calling thread's network namespace; every
/// foreign change to a banger table is sent on the returned channel.
pub fn watch() -> io::Result<(mpsc::UnboundedReceiver<Change>, JoinHandle<()>)> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.add_membership(NFNLGRP_NFTABLES)?;
    // A flush of a large ruleset is one burst of messages.
    let _ = sock.set_rx_buf_sz(4 << 20);
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("nft-monitor".into())
        .spawn(move || read_loop(&sock, &tx))?;
    Ok((rx, thread))
}

fn read_loop(sock: &Socket, tx: &mpsc::UnboundedSender<Change>) {
    let mut touched = false;
    loop {
        let buf = match sock.recv_from_full() {
            Ok((buf, _)) => buf,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                touched = false;
                if tx.send(Change::Lost).is_err() {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "nftables monitor stopped");
                return;
            }
        };
        for event in parse(&buf) {
            match event {
                Event::Touched => touched = true,
                Event::Commit { pid } => {
                    if std::mem::take(&mut touched)
                        && !ours(pid)
                        && tx.send(Change::Foreign { pid }).is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A message about a banger table.
    Touched,
    /// The end of a transaction, committed by `pid`.
    Commit { pid: u32 },
}

/// The events in one datagram of nfnetlink messages.
fn parse(mut buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(msg) = NetlinkBuffer::new_checked(buf) {
        let len = usize::try_from(msg.length()).unwrap_or(usize::MAX);
        let ty = msg.message_type();
        let payload = msg.payload();
        if ty >> 8 == NFNL_SUBSYS_NFTABLES && payload.len() >= 4 {
            let family = payload[0];
            let attrs = &payload[4..];
            let msg_type = ty & 0xff;
            if msg_type == NFT_MSG_NEWGEN {
                let pid = attr(attrs, NFTA_GEN_PROC_PID)
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map_or(0, u32::from_be_bytes);
                out.push(Event::Commit { pid });
            } else if FAMILIES.contains(&family)
                && attr(attrs, NFTA_TABLE)
                    .is_some_and(|v| v.strip_suffix(&[0]).unwrap_or(v) == TABLE.as_bytes())
            {
                out.push(Event::Touched);
            }
        }
        // Messages are 4-byte aligned within a datagram.
        let next = len.div_ceil(4) * 4;
        if next == 0 || next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    out
}

fn attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let a: NlaBuffer<&[u8]> = NlasIterator::new(attrs)
        .filter_map(Result::ok)
        .find(|a: &NlaBuffer<&[u8]>| a.kind() == kind)?;
    let len = a.value_length();
    // The value is the attribute after its 4-byte header.
    a.into_inner().get(4..4 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(ty: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (kind, value) in attrs {
            let len = u16::try_from(4 + value.len()).unwrap();
            body.extend_from_slice(&len.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn a_transaction_on_banger_tables_is_seen_with_its_committer() {
        let table = |name: &[u8], fam| nlmsg(NFNL_SUBSYS_NFTABLES << 8 | 2, fam, &[(1, name)]);
        let genmsg = nlmsg(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN,
            0,
            &[(1, &7u32.to_be_bytes()), (2, &4242u32.to_be_bytes())],
        );
        let mut dgram = table(b"filter\0", 1);
        dgram.extend(table(b"banger\0", 7));
        dgram.extend(table(b"banger\0", 2)); // ip family: not ours
        dgram.extend(genmsg);
        assert_eq!(
            parse(&dgram),
            vec![Event::Touched, Event::Commit { pid: 4242 }]
        );
    }
}
