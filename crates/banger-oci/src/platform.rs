//! Platforms (`os/arch[/variant]`): parsing and validating `--platform`,
//! and choosing the matching manifest of an image index.

use std::fmt;
use std::str::FromStr;

use crate::OciError;

/// Architectures (GOARCH spelling, as OCI uses) accepted in a platform.
const ARCHES: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
];

/// A target platform. banger boots Linux guests only, so `os` is `linux`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// `v7`, `v8`...; `None` accepts the architecture's usual variant.
    pub variant: Option<String>,
}

impl Default for Platform {
    /// linux/amd64: what banger's VMMs run on x86_64 hosts.
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = OciError;

    /// `os/arch[/variant]`; `x86_64` and `aarch64` are accepted as aliases.
    fn from_str(s: &str) -> Result<Platform, OciError> {
        let bad = |reason: &str| OciError::BadPlatform {
            platform: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad("expected os/arch or os/arch/variant")),
        };
        if os != "linux" {
            return Err(bad("only linux images can boot in a banger VM"));
        }
        let arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        if !ARCHES.contains(&arch) {
            return Err(bad(&format!(
                "unknown architecture {arch:?} (known: {})",
                ARCHES.join(", ")
            )));
        }
        if let Some(v) = variant {
            let digits = v.strip_prefix('v').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("variant must look like v7 or v8"));
            }
        }
        Ok(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        })
    }
}

impl Platform {
    /// The variant an index entry without one stands for (OCI: arm64 is
    /// v8 unless said otherwise).
    fn implied_variant(arch: &str) -> Option<&'static str> {
        match arch {
            "arm64" => Some("v8"),
            _ => None,
        }
    }

    /// Whether an index entry's platform fields satisfy this platform.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if os != self.os || architecture != self.architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(want) => {
                let have = variant
                    .filter(|v| !v.is_empty())
                    .or(Self::implied_variant(architecture));
                have == Some(want.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        assert_eq!(
            "linux/amd64".parse::<Platform>().unwrap(),
            Platform::default()
        );
        let p: Platform = "linux/aarch64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        for bad in [
            "linux",
            "windows/amd64",
            "linux/sparc",
            "linux/arm/7",
            "linux/arm/v",
            "a/b/c/d",
            "",
        ] {
            let err = bad.parse::<Platform>().expect_err(bad).to_string();
            assert!(err.starts_with("invalid platform"), "{err}");
        }
    }

    #[test]
    fn variants_are_respected() {
        let any_arm: Platform = "linux/arm".parse().unwrap();
        assert!(any_arm.matches("linux", "arm", Some("v6")));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches("linux", "arm", Some("v7")));
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(!v7.matches("linux", "arm", None));
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches("linux", "arm64", None));
        assert!(!Platform::default().matches("linux", "arm64", None));
    }
}
