//! The host bridge that every banger tap is a port of: created on demand,
//! given the gateway address of the guests' network, and removed on
//! uninstall. Each step is a netlink request, and ensuring twice changes
//! nothing.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::LinkBridge;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::InfoKind;

use crate::error::errno;
use crate::names::bridge_mac;
use crate::netlink::Link;
use crate::{NetError, Netlink, validate_ifname};

impl Netlink {
    /// Make `name` a bridge that is up and carries exactly the IPv4 address
    /// `cidr` (e.g. `172.16.0.1/24`). Creates it if missing; drops other
    /// IPv4 addresses it carries (left by an older `bridge_cidr`); refuses a
    /// non-bridge interface of that name, and a bridge banger did not make
    /// (see [`Self::check_ours`]), leaving both untouched. Returns the
    /// bridge's ifindex.
    pub async fn ensure_bridge(&self, name: &str, cidr: Ipv4Net) -> Result<u32, NetError> {
        validate_ifname(name)?;
        let link = match self.link_by_name(name).await? {
            Some(l) => {
                check_ours(&l)?;
                l
            }
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    // Created meanwhile by someone else: adopt it below if
                    // it is a bridge.
                    Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(NetError::netlink("create bridge", name, e)),
                }
                self.link_by_name(name)
                    .await?
                    .ok_or_else(|| NetError::NoSuchLink {
                        name: name.to_string(),
                    })?
            }
        };
        if link.kind != Some(InfoKind::Bridge) {
            return Err(NetError::NotABridge {
                name: name.to_string(),
                kind: link.kind_name(),
            });
        }
        self.ensure_only_address(&link, cidr).await?;
        self.set_mac(&link, bridge_mac(name)).await?;
        self.set_up(&link, None).await?;
        Ok(link.index)
    }

    /// Pin the bridge's MAC. A bridge without one of its own takes the
    /// lowest MAC among its ports and changes it whenever a tap with a
    /// lower one joins or the lowest one leaves: every guest's ARP entry
    /// for its gateway then points at a MAC the bridge no longer answers,
    /// and host <-> guest traffic (a ping from the host, replies to it)
    /// is lost until the guest's entry expires. Setting an unchanged MAC
    /// is a no-op for the kernel.
    async fn set_mac(&self, link: &crate::netlink::Link, mac: [u8; 6]) -> Result<(), NetError> {
        self.handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(link.index)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| NetError::netlink("set the MAC of", &link.name, e))
    }

    /// Delete the bridge `name`. A missing bridge is fine; a non-bridge of
    /// that name is refused and left alone.
    pub async fn remove_bridge(&self, name: &str) -> Result<(), NetError> {
        validate_ifname(name)?;
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(());
        };
        check_ours(&link)?;
        self.delete(&link).await
    }

    /// Whether `name` exists and is a bridge.
    pub async fn bridge_exists(&self, name: &str) -> Result<bool, NetError> {
        Ok(self
            .link_by_name(name)
            .await?
            .is_some_and(|l| l.kind == Some(InfoKind::Bridge)))
    }

    /// The names of every bridge in the namespace.
    pub async fn bridges(&self) -> Result<Vec<String>, NetError> {
        Ok(self
            .links()
            .await?
            .into_iter()
            .filter(|l| l.kind == Some(InfoKind::Bridge))
            .map(|l| l.name)
            .collect())
    }

    /// The IPv4 addresses (with prefix) that link `name` carries; empty
    /// when there is no such link.
    pub async fn ipv4_addresses(&self, name: &str) -> Result<Vec<Ipv4Net>, NetError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| NetError::netlink("list addresses of", name, e))?
        {
            if m.header.index != link.index {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a
                    && let Ok(net) = Ipv4Net::new(*ip, m.header.prefix_len)
                {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    async fn ensure_only_address(&self, link: &Link, cidr: Ipv4Net) -> Result<(), NetError> {
        let want = IpAddr::V4(cidr.addr());
        let mut present = false;
        let mut stale: Vec<AddressMessage> = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(|e| NetError::netlink("list addresses of", &link.name, e))?
        {
            if m.header.family != AddressFamily::Inet || m.header.index != link.index {
                continue;
            }
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if addr == Some(want) && m.header.prefix_len == cidr.prefix_len() {
                present = true;
            } else {
                stale.push(m);
            }
        }
        for m in stale {
            self.handle
                .address()
                .del(m)
                .execute()
                .await
                .map_err(|e| NetError::netlink("remove stale address from", &link.name, e))?;
        }
        if !present {
            match self
                .handle
                .address()
                .add(link.index, want, cidr.prefix_len())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetError::netlink("add address to", &link.name, e)),
            }
        }
        Ok(())
    }
}

/// Refuse a link that is not a bridge banger made: not a bridge at all,
/// or a bridge whose MAC is not the one banger pins on every bridge it
/// creates ([`bridge_mac`]): Docker's `docker0`, libvirt's `virbr0`, a
/// bridge of the administrator's that happens to have the configured name.
fn check_ours(link: &Link) -> Result<(), NetError> {
    if link.kind != Some(InfoKind::Bridge) {
        return Err(NetError::NotABridge {
            name: link.name.clone(),
            kind: link.kind_name(),
        });
    }
    let want = bridge_mac(&link.name);
    match &link.mac {
        Some(m) if m.as_slice() == want => Ok(()),
        other => Err(NetError::ForeignBridge {
            name: link.name.clone(),
            why: match other {
                Some(m) => format!(
                    "its MAC is {}, banger's would be {}",
                    crate::MacAddr(m.as_slice().try_into().unwrap_or([0; 6])),
                    crate::MacAddr(want)
                ),
                None => "it has no MAC".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_macs_are_stable_unicast_and_local() {
        let m = bridge_mac("banger0");
        assert_eq!(m, bridge_mac("banger0"));
        assert_ne!(m, bridge_mac("banger1"));
        assert_eq!(m[0] & 0b11, 0b10, "unicast, locally administered");
    }
}
