//! Where a VM may send traffic (`--egress`): `all` (NAT to everywhere,
//! the default), `none` (only banger's DNS on the gateway), or an allow
//! list of comma-separated entries `TARGET[:PORTS[/tcp|/udp]]`:
//!
//! - `TARGET`: an IPv4 address, a network (`10.0.0.0/8`) or a DNS name
//!   (`pypi.org`, `other.vm`); a name allows the addresses banger's DNS
//!   server answers for it, while its answer lasts;
//! - `PORTS`: one port or, for an address or network, a range
//!   `1000-2000`; without ports, every port and protocol (ICMP too);
//! - `/tcp` or `/udp`: only that protocol (default both).
//!
//! On the wire and in the store it is that same text, so `vm show` prints
//! what was typed (normalized).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::PortProto;

/// One entry of an allow list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressRule {
    pub target: EgressTarget,
    /// Inclusive; `None`: every port and protocol.
    pub ports: Option<(u16, u16)>,
    /// With ports: only this protocol (`None`: TCP and UDP).
    pub proto: Option<PortProto>,
}

/// What an allow entry names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EgressTarget {
    /// An address (`prefix` 32) or a network, as given.
    Net { addr: Ipv4Addr, prefix: u8 },
    /// A DNS name, lowercase, without the final dot.
    Name(String),
}

/// A VM's egress policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Egress {
    #[default]
    All,
    None,
    Allow(Vec<EgressRule>),
}

impl Egress {
    pub fn is_all(&self) -> bool {
        *self == Egress::All
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            EgressTarget::Net { addr, prefix: 32 } => write!(f, "{addr}")?,
            EgressTarget::Net { addr, prefix } => write!(f, "{addr}/{prefix}")?,
            EgressTarget::Name(n) => f.write_str(n)?,
        }
        if let Some((a, b)) = self.ports {
            if a == b {
                write!(f, ":{a}")?;
            } else {
                write!(f, ":{a}-{b}")?;
            }
            if let Some(p) = self.proto {
                write!(f, "/{}", p.as_str())?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Egress::All => f.write_str("all"),
            Egress::None => f.write_str("none"),
            Egress::Allow(rules) => {
                let parts: Vec<String> = rules.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

fn dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn port(s: &str, entry: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "egress entry {entry:?}: {s:?} is not a port (1-65535)"
        )),
        Ok(p) => Ok(p),
    }
}

impl FromStr for EgressRule {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let (target, ports) = match entry.split_once(':') {
            Some((t, p)) => (t, Some(p)),
            None => (entry, None),
        };
        let target = if target
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
        {
            let (addr, prefix) = target.split_once('/').unwrap_or((target, "32"));
            let addr: Ipv4Addr = addr
                .parse()
                .map_err(|_| format!("egress entry {entry:?}: {addr:?} is not an IPv4 address"))?;
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or_else(|| format!("egress entry {entry:?}: bad prefix /{prefix}"))?;
            EgressTarget::Net { addr, prefix }
        } else if dns_name(target) {
            EgressTarget::Name(target.trim_end_matches('.').to_ascii_lowercase())
        } else {
            return Err(format!(
                "egress entry {entry:?}: {target:?} is neither an IPv4 address, a network nor a DNS name"
            ));
        };
        let (ports, proto) = match ports {
            None => (None, None),
            Some(p) => {
                let (range, proto) = match p.rsplit_once('/') {
                    Some((r, "tcp")) => (r, Some(PortProto::Tcp)),
                    Some((r, "udp")) => (r, Some(PortProto::Udp)),
                    Some((_, other)) => {
                        return Err(format!(
                            "egress entry {entry:?}: protocol {other:?} is not tcp or udp"
                        ));
                    }
                    None => (p, None),
                };
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                let (a, b) = (port(a, entry)?, port(b, entry)?);
                if a > b {
                    return Err(format!("egress entry {entry:?}: range {a}-{b} is inverted"));
                }
                if a != b && matches!(target, EgressTarget::Name(_)) {
                    return Err(format!(
                        "egress entry {entry:?}: a DNS name takes one port, not a range"
                    ));
                }
                (Some((a, b)), proto)
            }
        };
        Ok(EgressRule {
            target,
            ports,
            proto,
        })
    }
}

impl FromStr for Egress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(Egress::All),
            "none" => Ok(Egress::None),
            "" => Err("egress: empty (use all, none, or an allow list)".into()),
            list => {
                let rules = list
                    .split(',')
                    .map(|e| e.trim().parse())
                    .collect::<Result<Vec<EgressRule>, String>>()?;
                if rules.len() > 256 {
                    return Err("egress: at most 256 entries".into());
                }
                Ok(Egress::Allow(rules))
            }
        }
    }
}

impl Serialize for Egress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_back() {
        for s in [
            "all",
            "none",
            "10.0.0.0/8",
            "10.0.0.1,pypi.org:443/tcp,192.168.1.0/24:1000-2000/udp,internet.test:80",
        ] {
            let e: Egress = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
        let e: Egress = "Example.COM.:53/udp".parse().unwrap();
        assert_eq!(e.to_string(), "example.com:53/udp");
        let json = serde_json::to_string(&Egress::None).unwrap();
        assert_eq!(json, "\"none\"");
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        for (s, want) in [
            ("", "empty"),
            ("x..y", "neither"),
            ("10.0.0.0/33", "prefix"),
            ("300.0.0.1", "not an IPv4"),
            ("pypi.org:1-2", "one port"),
            ("10.0.0.1:0", "not a port"),
            ("10.0.0.1:5-4", "inverted"),
            ("10.0.0.1:80/icmp", "not tcp or udp"),
        ] {
            let e = s.parse::<Egress>().unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
