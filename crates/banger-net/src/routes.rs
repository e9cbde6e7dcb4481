//! The check that the bridge's network does not collide with a network the
//! host already routes: a guest network overlapping the LAN or a VPN would
//! silently steal that traffic. Routes are read over netlink from every
//! table; default routes and the bridge's own routes do not count.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};

use crate::{NetError, Netlink};

impl Netlink {
    /// Refuse `cidr` if it overlaps a unicast or local route of the host
    /// that is not on `bridge` itself.
    pub async fn check_cidr_free(&self, cidr: Ipv4Net, bridge: &str) -> Result<(), NetError> {
        let names: HashMap<u32, String> = self
            .links()
            .await?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let ours = names
            .iter()
            .find(|(_, n)| n.as_str() == bridge)
            .map(|(i, _)| *i);
        let net = cidr.trunc();
        let mut s = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(r) = s
            .try_next()
            .await
            .map_err(|e| NetError::netlink("list routes for", bridge, e))?
        {
            if !matches!(r.header.kind, RouteType::Unicast | RouteType::Local) {
                continue;
            }
            let len = r.header.destination_prefix_length;
            if len == 0 {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let Some(route) = dst.and_then(|d| Ipv4Net::new(d, len).ok()) else {
                continue;
            };
            if oif.is_some() && oif == ours {
                continue;
            }
            let route = route.trunc();
            if route.contains(&net.network()) || net.contains(&route.network()) {
                return Err(NetError::CidrOverlap {
                    cidr,
                    route,
                    dev: oif.and_then(|i| names.get(&i).cloned()),
                });
            }
        }
        Ok(())
    }
}
