//! The tap of a suspended VM: a queue the daemon holds open so frames for
//! the VM wait in it, and a filter that lets only those frames in.
//!
//! While a VM is suspended its VMM is gone, but its persistent tap stays on
//! the bridge. The daemon attaches a queue of it (a descriptor from the
//! root helper's `OpenTap`) and polls that descriptor for readability
//! without reading: the first frame queued wakes the VM, whose VMM is then
//! handed this same descriptor and reads the frames that waited.
//!
//! Without a filter every broadcast on the bridge (another guest's ARP
//! for its gateway, the host's neighbour discovery) would queue in every
//! suspended VM's tap and wake them all. [`attach`] sets a classic BPF
//! socket filter on the queue (`TUNATTACHFILTER`, run by the kernel on
//! each frame before it is queued) that keeps:
//!
//! - frames sent to the VM's MAC (TCP, ICMP, UDP to it once the sender
//!   knows its MAC, unicast ARP probes);
//! - ARP requests asking for the VM's address (a sender that does not
//!   know its MAC yet; the woken guest answers it from the queue).
//!
//! Everything else is dropped before it is queued. [`detach`] removes the
//! filter before the descriptor goes to the VMM.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Ethertype of ARP.
const ETH_P_ARP: u32 = 0x0806;
/// ARP opcode of a request.
const ARP_REQUEST: u32 = 1;
/// Offsets in an Ethernet frame carrying ARP for IPv4.
const OFF_ETHERTYPE: u32 = 12;
const OFF_ARP_OP: u32 = 20;
const OFF_ARP_TARGET_IP: u32 = 38;

/// A classic BPF instruction; opcodes are the kernel's u16 (libc spells
/// their parts as u32, all below 0x100).
fn insn(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: u16::try_from(code).unwrap_or(u16::MAX),
        jt,
        jf,
        k,
    }
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    insn(code, k, 0, 0)
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    insn(code, k, jt, jf)
}

/// The filter program: accept (the whole frame) what is for `mac` or an
/// ARP request for `ip`; drop the rest. Loads are big-endian, as the
/// frame's bytes are.
pub fn program(mac: [u8; 6], ip: Ipv4Addr) -> Vec<libc::sock_filter> {
    use libc::{BPF_ABS, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
    let (ld_w, ld_h) = (BPF_LD | BPF_W | BPF_ABS, BPF_LD | BPF_H | BPF_ABS);
    let jeq = BPF_JMP | BPF_JEQ | BPF_K;
    let ret = BPF_RET | BPF_K;
    let mac_hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let mac_lo = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    vec![
        // 0-3: destination MAC == the VM's -> accept.
        stmt(ld_w, 0),
        jump(jeq, mac_hi, 0, 2),
        stmt(ld_h, 4),
        jump(jeq, mac_lo, 6, 0),
        // 4-9: an ARP request whose target is the VM's address -> accept.
        stmt(ld_h, OFF_ETHERTYPE),
        jump(jeq, ETH_P_ARP, 0, 5),
        stmt(ld_h, OFF_ARP_OP),
        jump(jeq, ARP_REQUEST, 0, 3),
        stmt(ld_w, OFF_ARP_TARGET_IP),
        jump(jeq, u32::from(ip), 0, 1),
        // 10: accept, the whole frame.
        stmt(ret, u32::MAX),
        // 11: drop.
        stmt(ret, 0),
    ]
}

/// Lets only frames for the VM (`mac`, `ip`) into the queue `fd` and so
/// wake it (see the module docs).
pub fn attach(fd: BorrowedFd<'_>, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let filter = program(mac, ip);
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(io::Error::other)?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `fd` is an open tap queue; TUNATTACHFILTER copies the
    // program (which outlives the call) into the kernel.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNATTACHFILTER, &prog) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNATTACHFILTER: {e}")));
    }
    Ok(())
}

/// Removes the filter of [`attach`]: the VMM that gets the queue sees
/// every frame again. A queue without a filter is left as it is.
pub fn detach(fd: BorrowedFd<'_>) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: 0,
        filter: std::ptr::null_mut(),
    };
    // SAFETY: `fd` is an open tap queue; TUNDETACHFILTER reads nothing
    // through the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNDETACHFILTER, &prog) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("TUNDETACHFILTER: {e}")));
    }
    Ok(())
}

/// Reads every frame waiting in the queue `fd` (non-blocking), each with
/// the virtio-net header the tap puts in front, and that header's size:
/// for a wake to hand them to the new VMM itself (QEMU would read them at
/// start, before its NIC's saved state sets the header size, and deliver
/// them shifted, which the guest drops).
pub fn drain(fd: BorrowedFd<'_>) -> io::Result<(Vec<Vec<u8>>, usize)> {
    let mut hdr: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut hdr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65_536 + 64];
    loop {
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            break;
        }
        frames.push(buf[..n].to_vec());
    }
    Ok((frames, usize::try_from(hdr).unwrap_or(0)))
}

/// `xx:xx:xx:xx:xx:xx` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the instructions [`program`]
    /// uses, so the jumps are checked against real frames here; the kernel
    /// runs it for real in `tests/wake_filter.rs`.
    fn run(prog: &[libc::sock_filter], frame: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let code = u32::from(i.code);
            let load = |k: u32, n: usize| {
                let k = k as usize;
                frame
                    .get(k..k + n)
                    .map(|b| b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
            };
            match code {
                c if c == (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) => match load(i.k, 4) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) => match load(i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == (libc::BPF_RET | libc::BPF_K) => return i.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    fn frame(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend([2, 0, 0, 0, 0, 9]);
        f.extend(ethertype.to_be_bytes());
        f.extend(payload);
        f
    }

    fn arp(op: u16, target: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4];
        p.extend(op.to_be_bytes());
        p.extend([2, 0, 0, 0, 0, 9, 172, 16, 0, 1]);
        p.extend([0; 6]);
        p.extend(target.octets());
        frame([0xff; 6], 0x0806, &p)
    }

    #[test]
    fn only_frames_for_the_vm_pass() {
        let mac = parse_mac("06:00:ac:10:00:05").unwrap();
        let ip: Ipv4Addr = "172.16.0.5".parse().unwrap();
        let p = program(mac, ip);
        // Unicast to the VM: a TCP SYN, a ping.
        assert_eq!(run(&p, &frame(mac, 0x0800, &[0x45; 40])), u32::MAX);
        // An ARP request for the VM's address, broadcast.
        assert_eq!(run(&p, &arp(1, ip)), u32::MAX);
        // Another VM's ARP request, an ARP reply, a broadcast IPv4, IPv6
        // multicast, a frame for another MAC, a runt: dropped.
        assert_eq!(run(&p, &arp(1, "172.16.0.6".parse().unwrap())), 0);
        assert_eq!(run(&p, &arp(2, ip)), 0);
        assert_eq!(run(&p, &frame([0xff; 6], 0x0800, &[0x45; 40])), 0);
        assert_eq!(
            run(&p, &frame([0x33, 0x33, 0, 0, 0, 1], 0x86dd, &[0x60; 40])),
            0
        );
        let mut other = mac;
        other[5] ^= 1;
        assert_eq!(run(&p, &frame(other, 0x0800, &[0x45; 40])), 0);
        assert_eq!(run(&p, &mac[..4]), 0);
    }
}
