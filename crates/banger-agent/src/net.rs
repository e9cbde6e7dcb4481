//! Interface and route setup through ioctls.
//!
//! A netlink library would be the general tool, but the agent only needs
//! "link up, one address, one default route", which the classic SIOC*
//! ioctls do in a few lines with no extra dependency in a static PID 1.

use std::io;
use std::net::Ipv4Addr;

use banger_proto::boot_params::BootParams;

struct Sock(libc::c_int);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

fn socket() -> io::Result<Sock> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sock(fd))
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "AF_INET (2) fits sa_family_t"
)]
fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and the
    // kernel reads it back as sockaddr_in because the family says AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(s: &Sock, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> io::Result<()> {
    // SAFETY: callers pass a pointer to the struct type `req` expects, alive
    // for the call.
    if unsafe { libc::ioctl(s.0, req, arg) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

#[expect(clippy::cast_possible_truncation, reason = "IFF_UP (1) fits c_short")]
fn link_up(s: &Sock, name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    ioctl(s, libc::SIOCGIFFLAGS, (&raw mut req).cast(), "get flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(
        s,
        libc::SIOCSIFFLAGS,
        (&raw mut req).cast(),
        &format!("{name} up"),
    )
}

/// Brings up `lo`, and `eth0` with the address and route from the
/// parameters when the VM has a NIC. Returns whether eth0 was configured.
pub fn configure(p: &BootParams) -> io::Result<bool> {
    let s = socket()?;
    link_up(&s, "lo")?;
    let Some((addr, prefix)) = p.ip else {
        return Ok(false);
    };
    if !std::path::Path::new("/sys/class/net/eth0").exists() {
        crate::log("banger.ip given but the VM has no eth0; skipping network");
        return Ok(false);
    }
    if let Some(mac) = p.mac {
        set_mac(mac)?;
    }
    let mut req = ifreq("eth0")?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(
        &s,
        libc::SIOCSIFADDR,
        (&raw mut req).cast(),
        "set eth0 address",
    )?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    let mut req = ifreq("eth0")?;
    req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::from(mask));
    ioctl(
        &s,
        libc::SIOCSIFNETMASK,
        (&raw mut req).cast(),
        "set eth0 netmask",
    )?;
    link_up(&s, "eth0")?;
    if let Some(gw) = p.gw {
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        ioctl(
            &s,
            libc::SIOCADDRT,
            (&raw mut rt).cast(),
            "add default route",
        )?;
    }
    Ok(true)
}

/// Gives `eth0` of a restored guest its new identity: MAC (down, set, up),
/// address, netmask and default route. The saved state carries the old
/// VM's, and a fork on the same bridge must not answer to them.
pub fn rebind(mac: [u8; 6], addr: Ipv4Addr, prefix: u8, gw: Ipv4Addr) -> io::Result<()> {
    if !std::path::Path::new("/sys/class/net/eth0").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the guest has no eth0",
        ));
    }
    set_mac(mac)?;
    let mut p = BootParams::parse("").0;
    p.ip = Some((addr, prefix));
    p.gw = Some(gw);
    match configure(&p) {
        Ok(_) => Ok(()),
        // Bringing the link up again can restore the old route first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "IFF_UP (1) fits c_short; ARPHRD_ETHER (1) fits sa_family_t"
)]
/// Takes `eth0` down and gives it `mac`. The virtio-net driver passes the
/// address on to the device, whose receive filter follows it.
fn set_mac(mac: [u8; 6]) -> io::Result<()> {
    let s = socket()?;
    let mut req = ifreq("eth0")?;
    ioctl(&s, libc::SIOCGIFFLAGS, (&raw mut req).cast(), "get flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
    ioctl(&s, libc::SIOCSIFFLAGS, (&raw mut req).cast(), "eth0 down")?;
    let mut req = ifreq("eth0")?;
    // SAFETY: sockaddr is plain old data; all-zero is a valid value.
    let mut hw: libc::sockaddr = unsafe { std::mem::zeroed() };
    hw.sa_family = libc::ARPHRD_ETHER as libc::sa_family_t;
    for (d, s) in hw.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = hw;
    ioctl(
        &s,
        libc::SIOCSIFHWADDR,
        (&raw mut req).cast(),
        "set eth0 mac",
    )
}
