//! What a VM asks of host networking: its published ports (`-p
//! [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]`, as Docker spells them) and
//! whether it gets a NIC at all ([`VmNetwork`]).
//!
//! Parsing and validation live here so the CLI refuses a bad spec before
//! it talks to the daemon and the daemon refuses the same specs from any
//! other client. The daemon alone checks what needs the host: another VM
//! publishing the same port (at create), another process holding it (at
//! start).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    #[default]
    Tcp,
    Udp,
}

impl PortProto {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// One published port: connections to `host_ip:host_port` on the host
/// (every host address when `host_ip` is absent, 127.0.0.1 included) go
/// to `guest_port` of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortSpec {
    /// Only this IPv4 address of the host; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "127.0.0.1"))]
    pub host_ip: Option<Ipv4Addr>,
    /// 1-65535.
    pub host_port: u16,
    /// 1-65535.
    pub guest_port: u16,
    /// Default `tcp`.
    #[serde(default)]
    pub proto: PortProto,
}

impl PortSpec {
    /// Whether `self` and `other` would catch the same packets: the same
    /// protocol and host port, on the same address or where either means
    /// every address.
    pub fn overlaps(&self, other: &PortSpec) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The spec as `-p` takes it: `127.0.0.1:8080:80/udp`, `8080:80/tcp`.
    pub fn to_flag(&self) -> String {
        let host = self.host_ip.map(|i| format!("{i}:")).unwrap_or_default();
        format!(
            "{host}{}:{}/{}",
            self.host_port,
            self.guest_port,
            self.proto.as_str()
        )
    }

    /// Refuse what no host can publish; serde already bounds the ports to
    /// 0-65535.
    pub fn validate(&self) -> Result<(), String> {
        for (what, p) in [("host", self.host_port), ("guest", self.guest_port)] {
            if p == 0 {
                return Err(format!(
                    "port {}: {what} port 0 is not a port (use 1-65535)",
                    self.to_flag()
                ));
            }
        }
        if let Some(ip) = self.host_ip {
            check_host_ip(ip).map_err(|e| format!("port {}: {e}", self.to_flag()))?;
        }
        Ok(())
    }
}

/// `0.0.0.0:8080->80/tcp`, as `docker ps` prints it.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.guest_port,
            self.proto.as_str()
        )
    }
}

fn check_host_ip(ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("{ip} is not a unicast address of this host"));
    }
    Ok(())
}

fn parse_port(s: &str, what: &str, spec: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err(format!("bad port spec {spec:?}: the {what} port is empty"));
    }
    if s.contains('-') {
        return Err(format!(
            "bad port spec {spec:?}: port ranges ({s}) are not supported; give one -p per port"
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad port spec {spec:?}: {what} port {s:?} is not a number"
        ));
    }
    match s.parse::<u32>() {
        Ok(0) => Err(format!(
            "bad port spec {spec:?}: {what} port 0 is not a port (use 1-65535)"
        )),
        Ok(n) => u16::try_from(n).map_err(|_| {
            format!("bad port spec {spec:?}: {what} port {n} is out of range (1-65535)")
        }),
        Err(_) => Err(format!(
            "bad port spec {spec:?}: {what} port {s} is out of range (1-65535)"
        )),
    }
}

/// `[HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]`.
impl FromStr for PortSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (addr, proto) = match spec.rsplit_once('/') {
            None => (spec, PortProto::Tcp),
            Some((a, "tcp")) => (a, PortProto::Tcp),
            Some((a, "udp")) => (a, PortProto::Udp),
            Some((_, p)) => {
                return Err(format!(
                    "bad port spec {spec:?}: protocol {p:?} is not tcp or udp"
                ));
            }
        };
        if addr.starts_with('[') || addr.matches(':').count() > 2 {
            return Err(format!(
                "bad port spec {spec:?}: only IPv4 host addresses can be published"
            ));
        }
        let parts: Vec<&str> = addr.split(':').collect();
        let (ip, host, guest) = match parts.as_slice() {
            [host, guest] => (None, *host, *guest),
            [ip, host, guest] => (Some(*ip), *host, *guest),
            _ => {
                return Err(format!(
                    "bad port spec {spec:?}: expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp|/udp]"
                ));
            }
        };
        let host_ip = match ip {
            None => None,
            Some(text) => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    format!("bad port spec {spec:?}: {text:?} is not an IPv4 address")
                })?;
                check_host_ip(ip).map_err(|e| format!("bad port spec {spec:?}: {e}"))?;
                // 0.0.0.0 is what "every address" means; store it as such.
                (!ip.is_unspecified()).then_some(ip)
            }
        };
        Ok(PortSpec {
            host_ip,
            host_port: parse_port(host, "host", spec)?,
            guest_port: parse_port(guest, "guest", spec)?,
            proto,
        })
    }
}

/// Check each spec and that no two of them overlap.
pub fn validate_ports(ports: &[PortSpec]) -> Result<(), String> {
    for (i, p) in ports.iter().enumerate() {
        p.validate()?;
        if let Some(q) = ports[..i].iter().find(|q| q.overlaps(p)) {
            return Err(format!(
                "host port {}/{} is published twice (-p {} and -p {})",
                p.host_port,
                p.proto.as_str(),
                q.to_flag(),
                p.to_flag()
            ));
        }
    }
    Ok(())
}

/// Whether a VM gets a NIC on the host bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmNetwork {
    /// As the daemon's `network.mode` says (the default).
    #[default]
    Auto,
    /// A NIC, or the start fails.
    Bridge,
    /// No NIC: only `lo` in the guest; `-p` is refused.
    None,
}

impl VmNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            VmNetwork::Auto => "auto",
            VmNetwork::Bridge => "bridge",
            VmNetwork::None => "none",
        }
    }
}

impl FromStr for VmNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(VmNetwork::Auto),
            "bridge" => Ok(VmNetwork::Bridge),
            "none" => Ok(VmNetwork::None),
            _ => Err(format!("network {s:?} is not one of auto, bridge or none")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<PortSpec, String> {
        s.parse()
    }

    #[test]
    fn docker_forms_parse() {
        assert_eq!(
            p("8080:80").unwrap(),
            PortSpec {
                host_ip: None,
                host_port: 8080,
                guest_port: 80,
                proto: PortProto::Tcp
            }
        );
        let u = p("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(u.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            (u.host_port, u.guest_port, u.proto),
            (5353, 53, PortProto::Udp)
        );
        assert_eq!(p("0.0.0.0:1:65535/tcp").unwrap().host_ip, None);
        assert_eq!(u.to_string(), "127.0.0.1:5353->53/udp");
        assert_eq!(p("8080:80").unwrap().to_string(), "0.0.0.0:8080->80/tcp");
        assert_eq!(u.to_flag(), "127.0.0.1:5353:53/udp");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("0:80", "port 0"),
            ("8080:0", "port 0"),
            ("70000:80", "out of range"),
            ("8080:99999999999999999999", "out of range"),
            ("8080:80/sctp", "not tcp or udp"),
            ("8080:80/", "not tcp or udp"),
            ("1.2.3:8080:80", "not an IPv4 address"),
            ("localhost:8080:80", "not an IPv4 address"),
            ("[::1]:8080:80", "IPv4"),
            ("::1:8080:80", "IPv4"),
            ("224.0.0.1:8080:80", "unicast"),
            ("255.255.255.255:8080:80", "unicast"),
            ("80", "expected"),
            ("", "expected"),
            ("8000-8010:80", "ranges"),
            ("x:80", "not a number"),
            ("+80:80", "not a number"),
            (":80", "empty"),
            ("80:", "empty"),
        ] {
            let e = p(spec).unwrap_err();
            assert!(e.contains(says), "{spec:?}: {e}");
            assert!(!e.contains('\n'), "{spec:?}: one line: {e}");
        }
    }

    #[test]
    fn overlaps_follow_the_address() {
        let all = p("8080:80").unwrap();
        let lo = p("127.0.0.1:8080:81").unwrap();
        let other = p("10.0.0.1:8080:81").unwrap();
        let udp = p("8080:80/udp").unwrap();
        assert!(all.overlaps(&lo) && lo.overlaps(&all));
        assert!(!lo.overlaps(&other));
        assert!(!all.overlaps(&udp));
        let e = validate_ports(&[all, udp, lo]).unwrap_err();
        assert!(e.contains("published twice"), "{e}");
        validate_ports(&[lo, other, udp]).unwrap();
        let zero = PortSpec {
            host_port: 0,
            ..all
        };
        assert!(validate_ports(&[zero]).unwrap_err().contains("port 0"));
    }

    #[test]
    fn json_is_structured_and_tcp_by_default() {
        let spec: PortSpec = serde_json::from_str(r#"{"host_port":8080,"guest_port":80}"#).unwrap();
        assert_eq!(spec, p("8080:80").unwrap());
        assert!(
            serde_json::from_str::<PortSpec>(r#"{"host_port":70000,"guest_port":80}"#).is_err()
        );
        assert!(
            serde_json::from_str::<PortSpec>(r#"{"host_ip":"x","host_port":1,"guest_port":80}"#)
                .is_err()
        );
        assert_eq!(
            serde_json::to_string(&p("127.0.0.1:1:2/udp").unwrap()).unwrap(),
            r#"{"host_ip":"127.0.0.1","host_port":1,"guest_port":2,"proto":"udp"}"#
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn valid_specs_round_trip(ip in proptest::option::of(any::<[u8; 4]>()),
                                      host in 1u16.., guest in 1u16.., udp in any::<bool>()) {
                let ip = ip.map(Ipv4Addr::from).filter(|i| check_host_ip(*i).is_ok() && !i.is_unspecified());
                let spec = PortSpec {
                    host_ip: ip, host_port: host, guest_port: guest,
                    proto: if udp { PortProto::Udp } else { PortProto::Tcp },
                };
                prop_assert_eq!(spec.to_flag().parse::<PortSpec>(), Ok(spec));
                prop_assert!(spec.validate().is_ok());
            }

            #[test]
            fn out_of_range_ports_are_refused(big in 65536u64..u64::MAX, guest in 1u16..) {
                let e = format!("{big}:{guest}").parse::<PortSpec>().unwrap_err();
                prop_assert!(e.contains("out of range"), "{}", e);
                let e = format!("{guest}:{big}/udp").parse::<PortSpec>().unwrap_err();
                prop_assert!(e.contains("out of range"), "{}", e);
            }

            #[test]
            fn anything_parses_or_says_why(s in "\\PC{0,30}") {
                match s.parse::<PortSpec>() {
                    Ok(spec) => prop_assert!(spec.validate().is_ok()),
                    Err(e) => prop_assert!(e.starts_with("bad port spec") && !e.contains('\n'), "{}", e),
                }
            }
        }
    }
}
