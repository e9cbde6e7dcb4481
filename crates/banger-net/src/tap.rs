//! Per-VM tap devices. A tap is created persistent and owned by the uid
//! that will run the VMM, so an unprivileged QEMU or Firecracker can open
//! it later by name, and it outlives both the creating process and a
//! daemon crash. Creation needs ioctls on `/dev/net/tun` (the kernel does
//! not create tun devices over rtnetlink); attaching to the bridge, setting
//! up, listing and deleting are netlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rtnetlink::packet_route::link::InfoKind;

use crate::{NetError, Netlink, TapName};

/// What [`Netlink::list_taps`] reports for one banger tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    pub name: TapName,
    /// The ifindex of the bridge it is a port of, if any.
    pub controller: Option<u32>,
}

impl Netlink {
    /// Create (or adopt) the persistent tap `tap`, owned by `owner`, as an
    /// up port of `bridge`. Idempotent; on failure after the device was
    /// made, the device is deleted again so nothing half-made remains.
    pub async fn create_tap(
        &self,
        tap: &TapName,
        owner: u32,
        bridge: &str,
    ) -> Result<(), NetError> {
        let Some(br) = self.link_by_name(bridge).await? else {
            return Err(NetError::NoSuchLink {
                name: bridge.to_string(),
            });
        };
        if br.kind != Some(InfoKind::Bridge) {
            return Err(NetError::NotABridge {
                name: bridge.to_string(),
                kind: br.kind_name(),
            });
        }
        let existed = self.link_by_name(tap.as_str()).await?.is_some();
        make_persistent_tap(tap, owner)?;
        let attach = async {
            let link =
                self.link_by_name(tap.as_str())
                    .await?
                    .ok_or_else(|| NetError::NoSuchLink {
                        name: tap.to_string(),
                    })?;
            self.set_up(&link, Some(br.index)).await
        };
        match attach.await {
            Ok(()) => Ok(()),
            Err(e) => {
                if !existed {
                    let _ = self.delete_tap(tap).await;
                }
                Err(e)
            }
        }
    }

    /// Open a queue of the existing tap `tap` and return its descriptor,
    /// for a VMM that takes an already-open tap (QEMU's `-netdev
    /// tap,fd=N`): the caller then needs no access to /dev/net/tun. The
    /// queue has IFF_VNET_HDR, which QEMU probes and uses. A tap that does
    /// not exist is an error, never created here.
    pub async fn open_tap(&self, tap: &TapName) -> Result<OwnedFd, NetError> {
        if self.link_by_name(tap.as_str()).await?.is_none() {
            return Err(NetError::NoSuchLink {
                name: tap.to_string(),
            });
        }
        let (file, _) = attach(tap, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)?;
        Ok(OwnedFd::from(file))
    }

    /// Delete the tap; a tap already gone is fine.
    pub async fn delete_tap(&self, tap: &TapName) -> Result<(), NetError> {
        match self.link_by_name(tap.as_str()).await? {
            Some(link) => self.delete(&link).await,
            None => Ok(()),
        }
    }

    /// Every interface named like a banger tap, for reconcile.
    pub async fn list_taps(&self) -> Result<Vec<TapInfo>, NetError> {
        let mut taps: Vec<TapInfo> = self
            .links()
            .await?
            .into_iter()
            .filter_map(|l| {
                TapName::parse(&l.name).ok().map(|name| TapInfo {
                    name,
                    controller: l.controller,
                })
            })
            .collect();
        taps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(taps)
    }
}

/// Open /dev/net/tun and TUNSETIFF onto `tap` with `flags` (creating it
/// when missing, as root may).
fn attach(tap: &TapName, flags: libc::c_int) -> Result<(File, libc::c_int), NetError> {
    let err = |op| {
        move |source| NetError::Tap {
            op,
            name: tap.to_string(),
            source,
        }
    };
    let tun: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(err("open /dev/net/tun for"))?;
    let fd = tun.as_raw_fd();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(tap.as_str().bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags =
        libc::c_short::try_from(flags).expect("tun flags fit the 16-bit ifr_flags");
    // SAFETY: fd is an open /dev/net/tun; TUNSETIFF reads and writes the
    // ifreq we own for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(err("attach to")(io::Error::last_os_error()));
    }
    Ok((tun, fd))
}

/// TUNSETIFF (attach to or create the device), TUNSETOWNER, TUNSETPERSIST,
/// then close: the device stays, owned by `owner`, with no queue attached.
fn make_persistent_tap(tap: &TapName, owner: u32) -> Result<(), NetError> {
    let err = |op| {
        move |source| NetError::Tap {
            op,
            name: tap.to_string(),
            source,
        }
    };
    // IFF_NO_PI: plain Ethernet frames, what QEMU and Firecracker expect.
    let (_tun, fd) = attach(tap, libc::IFF_TAP | libc::IFF_NO_PI)?;
    // TUNSETOWNER takes the uid itself as the argument, not a pointer to
    // it: passing a pointer would make the pointer's value the owner.
    // SAFETY: fd is attached to the tap; the argument is an integer.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, owner as libc::c_ulong) };
    if rc < 0 {
        return Err(err("set owner of")(io::Error::last_os_error()));
    }
    // SAFETY: as above; 1 = keep the device after this fd is closed.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(err("make persistent")(io::Error::last_os_error()));
    }
    Ok(())
}
