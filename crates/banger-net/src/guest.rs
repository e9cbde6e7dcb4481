//! What the host network holds for one guest, as plain data: the guest
//! network ([`GuestNet`]), a guest's identity on it ([`Guest`]: its tap,
//! IPv4 address and MAC), the host ports published to it ([`HostPort`])
//! and where it may send traffic ([`Egress`]).
//!
//! These types travel on the helper's wire and are rendered into nftables
//! rules by [`crate::nft`]; each validates itself so that neither the
//! renderer nor the helper ever sees an address outside the network, a
//! broadcast MAC or a port 0.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{NetError, TapName, validate_ifname};

/// The guests' network: the bridge and its address with the prefix, e.g.
/// `banger0` with `172.16.0.1/24`. Root's configuration of the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNet {
    pub bridge: String,
    /// The bridge's address and the network's prefix.
    pub cidr: Ipv4Net,
}

impl GuestNet {
    /// Refuse a bridge name that is not an interface name and a network
    /// that has no room for a guest or is not a private range: a guest
    /// network on public addresses would make those addresses local to
    /// every process of the host.
    pub fn validate(&self) -> Result<(), NetError> {
        validate_ifname(&self.bridge)?;
        if TapName::parse(&self.bridge).is_ok() {
            return Err(NetError::InvalidNetwork {
                cidr: self.cidr,
                reason: "the bridge may not be named like a banger tap".into(),
            });
        }
        let bad = |reason: &str| {
            Err(NetError::InvalidNetwork {
                cidr: self.cidr,
                reason: reason.to_string(),
            })
        };
        if self.cidr.prefix_len() > 30 {
            return bad("the prefix must be /30 or shorter to leave room for guests");
        }
        let a = self.cidr.addr();
        if a == self.cidr.network() || a == self.cidr.broadcast() {
            return bad("the bridge address must be a host address of the network");
        }
        let private: [Ipv4Net; 4] = [
            "10.0.0.0/8".parse().expect("valid"),
            "172.16.0.0/12".parse().expect("valid"),
            "192.168.0.0/16".parse().expect("valid"),
            "100.64.0.0/10".parse().expect("valid"),
        ];
        if !private.iter().any(|p| p.contains(&self.cidr.trunc())) {
            return bad("must lie in a private range (10/8, 172.16/12, 192.168/16 or 100.64/10)");
        }
        Ok(())
    }

    /// The gateway: the bridge's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.addr()
    }

    /// Whether `ip` may be a guest's: inside the network, and neither the
    /// gateway, the network address nor the broadcast address.
    pub fn is_guest_address(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && ip != self.cidr.addr()
            && ip != self.cidr.network()
            && ip != self.cidr.broadcast()
    }
}

/// An Ethernet address, written `02:00:5e:10:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Unicast (the multicast bit clear) and not all zeros: what a NIC may
    /// send from.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::InvalidMac { mac: s.to_string() };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Transport protocol of a published port or an egress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A host port a guest asks to publish: `[host_ip:]host_port ->
/// guest_port`, like `docker -p`. The guest's address is not part of it:
/// the helper forwards to the address bound to the guest's tap, never to
/// one a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPort {
    pub proto: Proto,
    /// Only this host address; `None` = every IPv4 address of the host.
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub guest_port: u16,
}

impl HostPort {
    /// Whether `self` and `other` catch the same packets.
    pub fn overlaps(&self, other: &HostPort) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.guest_port,
            self.proto.as_str()
        )
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Where one allow rule lets a guest send.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AllowTarget {
    /// An IPv4 network (a host is a /32).
    Net(Ipv4Net),
    /// A DNS name: the addresses banger's DNS server answers for it, for
    /// as long as the answer's TTL (at least a minute).
    Name(String),
}

/// One entry of an egress allow list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub target: AllowTarget,
    /// `None`: every port and protocol (ICMP included).
    #[serde(default)]
    pub ports: Option<PortRange>,
    /// `None` with ports: TCP and UDP.
    #[serde(default)]
    pub proto: Option<Proto>,
}

/// Where a guest may send traffic that leaves its tap for anything but
/// banger's DNS on the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "mode", content = "allow", rename_all = "snake_case")]
pub enum Egress {
    /// NAT to everywhere, other guests included (the default).
    #[default]
    All,
    /// Nothing: only banger's DNS (and ping) on the gateway.
    None,
    /// Only these networks, names and ports.
    Allow(Vec<AllowRule>),
}

impl Egress {
    /// The allow rules naming DNS names, for the DNS server to follow.
    pub fn names(&self) -> impl Iterator<Item = (&str, &AllowRule)> {
        let rules: &[AllowRule] = match self {
            Egress::Allow(r) => r,
            _ => &[],
        };
        rules.iter().filter_map(|r| match &r.target {
            AllowTarget::Name(n) => Some((n.as_str(), r)),
            AllowTarget::Net(_) => None,
        })
    }

    /// Refuse rules the renderer cannot express: a port range on a DNS
    /// name (resolved addresses go into a set without intervals), a
    /// protocol without ports, an inverted range, a bad name.
    pub fn validate(&self) -> Result<(), NetError> {
        let Egress::Allow(rules) = self else {
            return Ok(());
        };
        let bad = |why: String| Err(NetError::InvalidEgress { reason: why });
        if rules.len() > 256 {
            return bad("at most 256 allow rules".into());
        }
        for r in rules {
            if let Some(p) = r.ports
                && (p.first == 0 || p.first > p.last)
            {
                return bad(format!("bad port range {}-{}", p.first, p.last));
            }
            if r.ports.is_none() && r.proto.is_some() {
                return bad("a protocol needs ports (e.g. 53/udp)".into());
            }
            if let AllowTarget::Name(n) = &r.target {
                if !valid_dns_name(n) {
                    return bad(format!("{n:?} is not a DNS name"));
                }
                if r.ports.is_some_and(|p| p.first != p.last) {
                    return bad(format!(
                        "{n}: a DNS name takes one port or none, not a range"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// LDH labels of 1-63 characters, 253 at most in all, not all digits.
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && !name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One guest as the host network holds it while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    pub tap: TapName,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    #[serde(default)]
    pub egress: Egress,
    #[serde(default)]
    pub ports: Vec<HostPort>,
}

impl Guest {
    /// The suffix of this guest's own nft objects: its tap's id part.
    pub fn id(&self) -> &str {
        self.tap.vm_id_prefix()
    }
}

/// An address a DNS answer allowed a guest to reach, for `ttl_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    pub ip: Ipv4Addr,
    /// The one port it is allowed on (`None`: every port and protocol).
    #[serde(default)]
    pub port: Option<u16>,
    /// With a port: only this protocol (`None`: TCP and UDP).
    #[serde(default)]
    pub proto: Option<Proto>,
    pub ttl_s: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_know_unicast() {
        let m: MacAddr = "02:01:23:45:67:89".parse().unwrap();
        assert_eq!(m.to_string(), "02:01:23:45:67:89");
        assert!(m.is_unicast());
        assert!(!"ff:ff:ff:ff:ff:ff".parse::<MacAddr>().unwrap().is_unicast());
        assert!(!"00:00:00:00:00:00".parse::<MacAddr>().unwrap().is_unicast());
        for bad in [
            "02:01:23:45:67",
            "02:01:23:45:67:89:00",
            "0g:01:23:45:67:89",
            "2:1:2:3:4:5",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn guest_networks_are_private_and_roomy() {
        let net = |c: &str| GuestNet {
            bridge: "banger0".into(),
            cidr: c.parse().unwrap(),
        };
        net("172.16.0.1/24").validate().unwrap();
        net("10.0.0.1/30").validate().unwrap();
        for bad in [
            "1.1.1.1/32",
            "1.1.1.1/24",
            "172.16.0.1/31",
            "172.16.0.0/24",
            "172.16.0.255/24",
            "8.8.8.1/24",
        ] {
            assert!(net(bad).validate().is_err(), "{bad}");
        }
        let n = net("172.16.0.1/24");
        assert!(n.is_guest_address("172.16.0.2".parse().unwrap()));
        for no in ["172.16.0.1", "172.16.0.0", "172.16.0.255", "172.16.1.2"] {
            assert!(!n.is_guest_address(no.parse().unwrap()), "{no}");
        }
        let tap_named = GuestNet {
            bridge: "bgt0123456789ab".into(),
            cidr: "172.16.0.1/24".parse().unwrap(),
        };
        assert!(tap_named.validate().is_err());
    }

    #[test]
    fn egress_rules_are_checked() {
        let rule = |t: AllowTarget, ports: Option<(u16, u16)>, proto| AllowRule {
            target: t,
            ports: ports.map(|(first, last)| PortRange { first, last }),
            proto,
        };
        let name = |n: &str| AllowTarget::Name(n.into());
        let ok = Egress::Allow(vec![
            rule(
                AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
                Some((1000, 2000)),
                None,
            ),
            rule(name("example.com"), Some((443, 443)), Some(Proto::Tcp)),
            rule(name("internet.test."), None, None),
        ]);
        ok.validate().unwrap();
        assert_eq!(ok.names().count(), 2);
        for bad in [
            rule(name("example.com"), Some((1, 2)), None),
            rule(name("-x.com"), None, None),
            rule(name("1.2.3"), None, None),
            rule(
                AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
                Some((5, 4)),
                None,
            ),
            rule(
                AllowTarget::Net("10.0.0.0/8".parse().unwrap()),
                None,
                Some(Proto::Udp),
            ),
        ] {
            assert!(
                Egress::Allow(vec![bad.clone()]).validate().is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn egress_wire_shape() {
        assert_eq!(
            serde_json::to_string(&Egress::None).unwrap(),
            r#"{"mode":"none"}"#
        );
        let e: Egress = serde_json::from_str(r#"{"mode":"all"}"#).unwrap();
        assert_eq!(e, Egress::All);
    }
}
