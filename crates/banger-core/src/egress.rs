//! Egress policies, the daemon's side: a VM's `--egress` (the API's
//! [`banger_api::Egress`], as stored) turned into what the host network
//! enforces ([`banger_net::Egress`]), and [`Follower`], the DNS answer hook
//! that makes an allow list follow names: when a guest whose list names
//! `pypi.org` asks banger's DNS for it, the addresses of the answer are
//! allowed for that guest (for the answer's TTL) before the guest gets the
//! answer. The guest is known by its source address, which the tap's
//! anti-spoofing rules guarantee.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use banger_api::{Egress, EgressTarget, PortProto};
use banger_helper::{AnyHostNetwork, HostNetwork};
use banger_net::{AllowRule, AllowTarget, PortRange, Proto, Resolved, TapName};
use ipnet::Ipv4Net;

/// What the host network enforces for `egress`.
pub fn to_net(egress: &Egress) -> banger_net::Egress {
    match egress {
        Egress::All => banger_net::Egress::All,
        Egress::None => banger_net::Egress::None,
        Egress::Allow(rules) => banger_net::Egress::Allow(
            rules
                .iter()
                .map(|r| AllowRule {
                    target: match &r.target {
                        EgressTarget::Net { addr, prefix } => AllowTarget::Net(
                            Ipv4Net::new(*addr, *prefix)
                                .unwrap_or_else(|_| Ipv4Net::from(*addr))
                                .trunc(),
                        ),
                        EgressTarget::Name(n) => AllowTarget::Name(n.clone()),
                    },
                    ports: r.ports.map(|(first, last)| PortRange { first, last }),
                    proto: r.proto.map(|p| match p {
                        PortProto::Tcp => Proto::Tcp,
                        PortProto::Udp => Proto::Udp,
                    }),
                })
                .collect(),
        ),
    }
}

/// The names one guest's allow list follows.
#[derive(Debug, Clone)]
struct Followed {
    tap: TapName,
    /// (name, the one port it is allowed on, the protocol).
    names: Vec<(String, Option<u16>, Option<Proto>)>,
}

/// The DNS answer hook: guests by address, with the names they follow.
pub struct Follower {
    host: Arc<AnyHostNetwork>,
    guests: RwLock<HashMap<Ipv4Addr, Followed>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

impl Follower {
    pub fn new(host: Arc<AnyHostNetwork>) -> Self {
        Follower {
            host,
            guests: RwLock::new(HashMap::new()),
        }
    }

    /// Follow the names of `egress` for the guest at `ip` on `tap`.
    pub fn insert(&self, ip: Ipv4Addr, tap: TapName, egress: &banger_net::Egress) {
        let names: Vec<_> = egress
            .names()
            .map(|(n, r)| (n.to_string(), r.ports.map(|p| p.first), r.proto))
            .collect();
        let mut guests = self.guests.write().unwrap_or_else(|e| e.into_inner());
        if names.is_empty() {
            guests.remove(&ip);
        } else {
            guests.insert(ip, Followed { tap, names });
        }
    }

    pub fn remove(&self, ip: Ipv4Addr) {
        self.guests
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }

    fn lookup(&self, client: IpAddr, name: &str) -> Option<(TapName, Option<u16>, Option<Proto>)> {
        let IpAddr::V4(ip) = client else { return None };
        let guests = self.guests.read().unwrap_or_else(|e| e.into_inner());
        let g = guests.get(&ip)?;
        g.names
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, port, proto)| (g.tap.clone(), *port, *proto))
    }
}

#[async_trait::async_trait]
impl banger_dns::AnswerHook for Follower {
    fn wants(&self, client: IpAddr, name: &str) -> bool {
        self.lookup(client, name).is_some()
    }

    async fn answered(&self, client: IpAddr, name: &str, addrs: &[(Ipv4Addr, u32)]) {
        let Some((tap, port, proto)) = self.lookup(client, name) else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let answers = addrs
            .iter()
            .map(|(ip, ttl)| Resolved {
                ip: *ip,
                port,
                proto,
                ttl_s: *ttl,
            })
            .collect();
        if let Err(e) = self.host.allow_resolved(&tap, answers).await {
            tracing::warn!(%client, %name, error = %e, "cannot allow the addresses of a DNS answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_policies_become_host_rules() {
        let e: Egress = "10.1.2.3/8:443/tcp,pypi.org:443,192.168.1.7"
            .parse()
            .unwrap();
        let banger_net::Egress::Allow(rules) = to_net(&e) else {
            panic!("allow list");
        };
        assert_eq!(
            rules[0].target,
            AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
            "networks are truncated to their prefix"
        );
        assert_eq!(rules[0].proto, Some(Proto::Tcp));
        assert_eq!(rules[1].target, AllowTarget::Name("pypi.org".into()));
        assert_eq!(
            rules[1].ports,
            Some(PortRange {
                first: 443,
                last: 443
            })
        );
        assert_eq!(
            rules[2].target,
            AllowTarget::Net("192.168.1.7/32".parse().unwrap())
        );
        to_net(&e).validate().unwrap();
        assert_eq!(to_net(&Egress::None), banger_net::Egress::None);
    }
}
