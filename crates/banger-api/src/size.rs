//! Human byte sizes (`8G`, `512MiB`, `1073741824`) as users type them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes. Parses `N`, `Nk`, `NM`, `NG`, `NT` with optional `i`/`iB`/`B`
/// suffix; all units are binary (1G = 1024^3), as in `truncate` and `qemu-img`.
/// Serializes as a plain integer; deserializes from an integer or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}")]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| SizeError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(digits_end);
        if num.is_empty() {
            return Err(err(
                "expected a number followed by an optional unit (K, M, G, T)",
            ));
        }
        let n: u64 = num.parse().map_err(|_| err("number too large"))?;
        let unit = unit.trim();
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "ki" | "kib" => 10,
            "m" | "mb" | "mi" | "mib" => 20,
            "g" | "gb" | "gi" | "gib" => 30,
            "t" | "tb" | "ti" | "tib" => 40,
            _ => return Err(err("unknown unit; use K, M, G or T")),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| err("size too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly, e.g. `8G`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in UNITS {
            let div = 1u64 << shift;
            if self.0 >= div && self.0.is_multiple_of(div) {
                return write!(f, "{}{unit}", self.0 / div);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Approximate size for listings: `1.5G`, `200M`, `12K`.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    for (shift, unit) in UNITS {
        let div = (1u64 << shift) as f64;
        let v = bytes as f64 / div;
        if v >= 1.0 {
            return if v >= 10.0 || (v.fract() < 0.05) {
                format!("{v:.0}{unit}")
            } else {
                format!("{v:.1}{unit}")
            };
        }
    }
    format!("{bytes}B")
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("8G".parse::<ByteSize>().unwrap().0, 8 << 30);
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1t".parse::<ByteSize>().unwrap().0, 1 << 40);
        assert_eq!(" 2 GB ".parse::<ByteSize>().unwrap().0, 2 << 30);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "G",
            "-1G",
            "1.5G",
            "8X",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn displays_round_units() {
        assert_eq!(ByteSize(8 << 30).to_string(), "8G");
        assert_eq!(ByteSize(1536 << 20).to_string(), "1536M");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(human(1536 << 20), "1.5G");
    }

    #[test]
    fn serde_accepts_number_and_string() {
        let a: ByteSize = serde_json::from_str("\"1G\"").unwrap();
        let b: ByteSize = serde_json::from_str("1073741824").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "1073741824");
    }
}
