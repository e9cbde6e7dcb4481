//! A restored guest takes its new identity ([`GuestIdentity`]): hostname,
//! wall clock, fresh entropy in the kernel's pool, and the NIC's MAC and
//! address. Files that carry identity (`/etc/hostname`, `/etc/hosts`,
//! host keys) are written by the host through `copy_in`; this is what only
//! code inside the guest can change.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use banger_proto::GuestIdentity;

use banger_proto::boot_params::BootParams;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)` (Linux 4.17+).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Applies everything in `id`; the first failure is the error, naming
/// what failed.
pub fn apply(id: &GuestIdentity) -> io::Result<()> {
    fresh_time_and_entropy(id)?;
    crate::sys::sethostname(&id.hostname)?;
    if let Some(net) = &id.net {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let mac = parse_mac(&net.mac).ok_or_else(|| bad("bad mac"))?;
        let (addr, prefix) = net
            .address
            .split_once('/')
            .ok_or_else(|| bad("bad address"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix"))?;
        let gw: Ipv4Addr = net.gateway.parse().map_err(|_| bad("bad gateway"))?;
        crate::net::rebind(mac, addr, prefix, gw)?;
    }
    Ok(())
}

/// The host's wall clock, and fresh entropy mixed into the kernel's pool.
pub fn fresh_time_and_entropy(id: &GuestIdentity) -> io::Result<()> {
    let bytes = parse_hex(&id.entropy_hex)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "entropy_hex is not hex"))?;
    // The clock first: the host read it just before sending, and the
    // reseed below takes tens of milliseconds under emulation, which would
    // otherwise be lost from the guest's time (seen: 67 ms behind after a
    // restore).
    set_clock(id.realtime_ns)?;
    add_entropy(&bytes)
}

/// What a warm-started guest boots with: `base` (the template's command
/// line) with this VM's hostname, and its address, gateway, resolver and
/// MAC when it has a NIC, as a cold boot gets them on its command line.
pub fn boot_params(base: &BootParams, id: &GuestIdentity) -> io::Result<BootParams> {
    let mut p = base.clone();
    p.hostname = Some(id.hostname.clone());
    if let Some(net) = &id.net {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let (addr, prefix) = net
            .address
            .split_once('/')
            .ok_or_else(|| bad("bad address"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| bad("bad prefix"))?;
        let gw: Ipv4Addr = net.gateway.parse().map_err(|_| bad("bad gateway"))?;
        p.ip = Some((addr, prefix));
        p.gw = Some(gw);
        // The bridge address is also the resolver (as on a cold boot).
        p.dns = vec![gw];
        p.mac = Some(parse_mac(&net.mac).ok_or_else(|| bad("bad mac"))?);
    }
    Ok(p)
}

/// Mixes `bytes` into the input pool, credits them and reseeds the CRNG
/// from it, so what a restored guest draws next no longer follows from
/// the saved state.
fn add_entropy(bytes: &[u8]) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| io::Error::new(e.kind(), format!("open /dev/urandom: {e}")))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let n = i32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too much entropy"))?;
    let mut info: Vec<u8> = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&(n * 8).to_ne_bytes());
    info.extend_from_slice(&n.to_ne_bytes());
    info.extend_from_slice(bytes);
    // The kernel reads buf as __u32 words: keep the buffer word-aligned
    // in size (it copies buf_size bytes, so no more is read).
    let words: Vec<u32> = info
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_ne_bytes(w)
        })
        .collect();
    // SAFETY: `words` holds a rand_pool_info header followed by buf_size
    // bytes, alive and 4-byte aligned for the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, words.as_ptr()) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("RNDADDENTROPY: {e}")));
    }
    // Crediting alone does not reseed a CRNG that is already ready: it
    // reseeds on its own schedule (seconds to a minute), and until then
    // every guest restored from one state draws the same numbers (seen:
    // two warm VMs printed the same uuids). Reseed now, from the pool
    // that holds the fresh bytes.
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("RNDRESEEDCRNG: {e}")));
    }
    Ok(())
}

/// Steps the wall clock to `ns` (the host's); returns what it read just
/// before. The monotonic clock is left alone: it stood still with the
/// guest, as it should.
pub fn step_clock(ns: u64) -> io::Result<u64> {
    let mut was = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock_gettime(2) into a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut was) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_clock(ns)?;
    let secs = u64::try_from(was.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(was.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

fn set_clock(ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: plain clock_settime(2) with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("set the clock: {e}")));
    }
    Ok(())
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_mac() {
        assert_eq!(parse_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(parse_hex("0"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(
            parse_mac("06:00:ac:10:00:03"),
            Some([6, 0, 0xac, 0x10, 0, 3])
        );
        assert_eq!(parse_mac("06:00"), None);
    }
}
