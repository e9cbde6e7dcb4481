//! Names of banger's interfaces. Every tap is named from its VM's id
//! (`bgt` + the first 12 hex characters of the 16-hex id) so that the
//! leftovers of a crashed daemon are found by listing links, and so the
//! helper can tell a banger tap from any other interface by name alone.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NetError;

/// Prefix of every tap banger creates.
pub const TAP_PREFIX: &str = "bgt";
/// How many hex characters of the VM id a tap name carries.
pub const TAP_ID_CHARS: usize = 12;
/// Longest Linux interface name (IFNAMSIZ minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// Check `name` is a usable Linux interface name (1-15 characters of
/// `[A-Za-z0-9_.-]`, not `.`/`..`): what the kernel accepts, minus the
/// characters that make trouble in tools and logs.
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > IFNAME_MAX {
        return bad("must be 1-15 characters");
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

/// The name of the tap of one VM. Only constructible from a VM id or from
/// a name of exactly that shape, so holding one proves it is banger's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TapName(String);

impl TapName {
    /// The tap of the VM with this 16-hex id.
    pub fn for_vm(vm_id: &str) -> Result<Self, NetError> {
        if vm_id.len() != 16 || !vm_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NetError::InvalidVmId {
                id: vm_id.to_string(),
            });
        }
        Ok(TapName(format!(
            "{TAP_PREFIX}{}",
            vm_id[..TAP_ID_CHARS].to_ascii_lowercase()
        )))
    }

    /// Accept `name` only if it is shaped like a banger tap.
    pub fn parse(name: &str) -> Result<Self, NetError> {
        let hex = name.strip_prefix(TAP_PREFIX).filter(|h| {
            h.len() == TAP_ID_CHARS
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        match hex {
            Some(_) => Ok(TapName(name.to_string())),
            None => Err(NetError::InvalidName {
                name: name.to_string(),
                reason: "not a banger tap (bgt + 12 lowercase hex characters)",
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The VM id prefix this tap was named from.
    pub fn vm_id_prefix(&self) -> &str {
        &self.0[TAP_PREFIX.len()..]
    }

    /// Whether this tap belongs to the VM with this full id.
    pub fn belongs_to(&self, vm_id: &str) -> bool {
        vm_id.len() == 16 && vm_id[..TAP_ID_CHARS].eq_ignore_ascii_case(self.vm_id_prefix())
    }
}

impl fmt::Display for TapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TapName {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, NetError> {
        TapName::parse(&s)
    }
}

impl From<TapName> for String {
    fn from(t: TapName) -> String {
        t.0
    }
}

/// The fixed MAC of bridge `name`: locally administered, unicast (`02:`),
/// then `bg` and three bytes of an FNV-1a hash of the name, so two banger
/// bridges on one host differ and a re-created bridge gets its old MAC
/// back (the guests' ARP entries stay right across a daemon restart).
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let [_, a, b, c] = h.to_be_bytes();
    [0x02, b'b', b'g', a, b, c]
}

/// The name of both of banger's tables (`inet banger`, `bridge banger`).
pub const TABLE: &str = "banger";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_come_from_vm_ids() {
        let t = TapName::for_vm("0123456789ABCDEF").unwrap();
        assert_eq!(t.as_str(), "bgt0123456789ab");
        assert!(t.as_str().len() <= IFNAME_MAX);
        assert_eq!(t.vm_id_prefix(), "0123456789ab");
        assert!(t.belongs_to("0123456789abcdef"));
        assert!(!t.belongs_to("1123456789abcdef"));
        assert_eq!(TapName::parse(t.as_str()).unwrap(), t);
    }

    #[test]
    fn foreign_names_are_refused() {
        for n in [
            "eth0",
            "lo",
            "bgt",
            "bgt0123456789a",
            "bgt0123456789abc",
            "bgtXYZ456789ab",
        ] {
            assert!(TapName::parse(n).is_err(), "{n}");
        }
        assert!(TapName::for_vm("short").is_err());
        assert!(TapName::for_vm("0123456789abcdeg").is_err());
        let e: Result<TapName, _> = serde_json::from_str("\"eth0\"");
        assert!(e.is_err());
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("banger0").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("a-very-long-name0").is_err());
        assert!(validate_ifname("br/0").is_err());
        assert!(validate_ifname("..").is_err());
    }
}
