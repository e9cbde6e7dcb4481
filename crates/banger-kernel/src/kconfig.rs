//! A kernel's build configuration (`.config`): from a package's
//! `/boot/config-*`, or embedded in the image by `CONFIG_IKCONFIG`.

use std::collections::HashMap;
use std::io::Read;

/// `CONFIG_IKCONFIG=y` puts the gzipped `.config` between these markers
/// (kernel/configs.c).
const IKCFG_START: &[u8] = b"IKCFG_ST";
const IKCFG_END: &[u8] = b"IKCFG_ED";
/// Configs are ~100-300 KiB; more means we are not reading one.
const MAX_CONFIG: u64 = 8 << 20;

/// The value of one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tristate {
    /// `=y`: built into the image.
    Yes,
    /// `=m`: a loadable module.
    Module,
    /// `# CONFIG_X is not set`, or absent.
    No,
}

/// `CONFIG_*` options by name (without the prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    options: HashMap<String, String>,
}

impl KernelConfig {
    /// Parses `.config` text; lines that are not `CONFIG_X=value` are skipped.
    pub fn parse(text: &str) -> KernelConfig {
        let options = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        KernelConfig { options }
    }

    /// The embedded `.config` text of an uncompressed kernel image, if it
    /// has one.
    pub fn ikconfig(image: &[u8]) -> Option<String> {
        let start = find(image, IKCFG_START)? + IKCFG_START.len();
        let rest = &image[start..];
        let end = find(rest, IKCFG_END).unwrap_or(rest.len());
        let mut text = String::new();
        flate2::read::GzDecoder::new(&rest[..end])
            .take(MAX_CONFIG)
            .read_to_string(&mut text)
            .ok()?;
        (!KernelConfig::parse(&text).is_empty()).then_some(text)
    }

    /// `CONFIG_<name>` as a tristate.
    pub fn tristate(&self, name: &str) -> Tristate {
        match self.options.get(name).map(String::as_str) {
            Some("y") => Tristate::Yes,
            Some("m") => Tristate::Module,
            _ => Tristate::No,
        }
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.tristate(name) == Tristate::Yes
    }

    pub fn len(&self) -> usize {
        self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_unset_lines() {
        let c = KernelConfig::parse(
            "#\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_VIRTIO_MMIO=m\n\
             CONFIG_ACPI=y\nCONFIG_LOCALVERSION=\"-cloud\"\n",
        );
        assert_eq!(c.tristate("VIRTIO_MMIO"), Tristate::Module);
        assert_eq!(c.tristate("ACPI"), Tristate::Yes);
        assert_eq!(c.tristate("VIRTIO_MMIO_CMDLINE_DEVICES"), Tristate::No);
        assert_eq!(c.tristate("NOPE"), Tristate::No);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn finds_embedded_config() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"CONFIG_IKCONFIG=y\nCONFIG_PVH=y\n").unwrap();
        let mut image = vec![0u8; 100];
        image.extend_from_slice(IKCFG_START);
        image.extend_from_slice(&gz.finish().unwrap());
        image.extend_from_slice(IKCFG_END);
        image.extend_from_slice(&[0u8; 50]);
        let c = KernelConfig::parse(&KernelConfig::ikconfig(&image).unwrap());
        assert!(c.is_set("PVH"));
        assert_eq!(KernelConfig::ikconfig(&[0u8; 100]), None);
    }
}
