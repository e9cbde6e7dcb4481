//! The `banger.*` kernel command-line parameters.
//!
//! | parameter | meaning |
//! |---|---|
//! | `banger.root=DEV` | read-only base filesystem (ext4); absent: stay in the initramfs |
//! | `banger.overlay=DEV` | ext4 holding `upper/` and `work/` of the root overlay; absent: tmpfs (changes are lost) |
//! | `banger.work=DEV` | persistent ext4 mounted at `/root` |
//! | `banger.modules=DEV` | read-only ext4 of the kernel's module tree, mounted at `/lib/modules/<release>` |
//! | `banger.ip=ADDR/PREFIX` | IPv4 address of `eth0` |
//! | `banger.gw=ADDR` | default gateway |
//! | `banger.dns=ADDR[,ADDR]` | written to `/etc/resolv.conf` |
//! | `banger.hostname=NAME` | hostname |
//! | `banger.init=auto\|none\|PATH` | `auto`: exec `/sbin/init` if the image has one; `none`: agent stays PID 1; `PATH`: exec that |
//! | `banger.template=1` | stop in the initramfs with only the channel up and wait for an identity over it (see `template`) |
//! | `banger.nomodules=NAME[,NAME]` | modules of the initramfs not to load (the host knows this VM has no NIC or no vsock); module loading is a large share of boot under emulation |
//!
//! `DEV` is a device path (`/dev/vda`) or `serial:NAME`, matched against
//! `/sys/block/*/serial`. QEMU's microvm enumerates virtio-mmio devices in
//! an order that is not the command-line order, so the QEMU driver names
//! disks by serial; Firecracker's order is stable and it passes paths.

use std::net::Ipv4Addr;

/// How to pick the init program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMode {
    /// `/sbin/init` if present, else stay PID 1.
    Auto,
    /// Stay PID 1.
    None,
    /// Exec this path.
    Path(String),
}

/// The parsed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub root: Option<String>,
    pub overlay: Option<String>,
    pub work: Option<String>,
    pub modules: Option<String>,
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gw: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub init: InitMode,
    /// Module names (file stems, `-` and `_` equivalent) not to load.
    pub skip_modules: Vec<String>,
    /// A boot template: wait for the identity before binding anything.
    pub template: bool,
    /// A MAC for eth0 (warm starts: the template's NIC carried another).
    pub mac: Option<[u8; 6]>,
}

impl Params {
    /// Parses a whole `/proc/cmdline`. Unknown `banger.*` keys and bad
    /// values are reported in the returned warnings rather than failing the
    /// boot: a guest that comes up without networking is easier to debug
    /// than one that panics as PID 1.
    pub fn parse(cmdline: &str) -> (Params, Vec<String>) {
        let mut p = Params {
            root: None,
            overlay: None,
            work: None,
            modules: None,
            ip: None,
            gw: None,
            dns: Vec::new(),
            hostname: None,
            init: InitMode::Auto,
            skip_modules: Vec::new(),
            template: false,
            mac: None,
        };
        let mut warnings = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            let Some(rest) = word.strip_prefix("banger.") else {
                continue;
            };
            let (key, val) = rest.split_once('=').unwrap_or((rest, ""));
            let mut bad = || warnings.push(format!("ignoring bad value in {word}"));
            match key {
                "root" => p.root = Some(val.to_owned()),
                "overlay" => p.overlay = Some(val.to_owned()),
                "work" => p.work = Some(val.to_owned()),
                "modules" => p.modules = Some(val.to_owned()),
                "ip" => match val.split_once('/').and_then(|(a, n)| {
                    Some((a.parse().ok()?, n.parse::<u8>().ok().filter(|n| *n <= 32)?))
                }) {
                    Some(v) => p.ip = Some(v),
                    None => bad(),
                },
                "gw" => match val.parse() {
                    Ok(v) => p.gw = Some(v),
                    Err(_) => bad(),
                },
                "dns" => {
                    for a in val.split(',').filter(|s| !s.is_empty()) {
                        match a.parse() {
                            Ok(v) => p.dns.push(v),
                            Err(_) => bad(),
                        }
                    }
                }
                "hostname" => p.hostname = Some(val.to_owned()),
                "template" => p.template = val == "1",
                "nomodules" => p.skip_modules.extend(
                    val.split(',')
                        .filter(|m| !m.is_empty())
                        .map(|m| m.replace('-', "_")),
                ),
                "init" => {
                    p.init = match val {
                        "auto" | "" => InitMode::Auto,
                        "none" => InitMode::None,
                        path if path.starts_with('/') => InitMode::Path(path.to_owned()),
                        _ => {
                            bad();
                            InitMode::Auto
                        }
                    }
                }
                _ => warnings.push(format!("unknown parameter {word}")),
            }
        }
        (p, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_params_and_ignores_others() {
        let (p, w) = Params::parse(
            "console=ttyS0 banger.root=serial:banger-base banger.overlay=/dev/vdb \
             banger.work=/dev/vdc banger.ip=172.16.0.2/24 banger.gw=172.16.0.1 \
             banger.dns=1.1.1.1,9.9.9.9 banger.hostname=vm1 banger.init=none \
             banger.nomodules=virtio-net,vsock banger.modules=serial:banger-modules quiet",
        );
        assert!(!p.template);
        assert_eq!(p.modules.as_deref(), Some("serial:banger-modules"));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.skip_modules, ["virtio_net", "vsock"]);
        assert_eq!(p.root.as_deref(), Some("serial:banger-base"));
        assert_eq!(p.overlay.as_deref(), Some("/dev/vdb"));
        assert_eq!(p.work.as_deref(), Some("/dev/vdc"));
        assert_eq!(p.ip, Some((Ipv4Addr::new(172, 16, 0, 2), 24)));
        assert_eq!(p.gw, Some(Ipv4Addr::new(172, 16, 0, 1)));
        assert_eq!(p.dns.len(), 2);
        assert_eq!(p.hostname.as_deref(), Some("vm1"));
        assert_eq!(p.init, InitMode::None);
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (p, w) =
            Params::parse("banger.ip=1.2.3.4/40 banger.gw=x banger.init=bogus banger.zz=1");
        assert_eq!(p.ip, None);
        assert_eq!(p.gw, None);
        assert_eq!(p.init, InitMode::Auto);
        assert_eq!(w.len(), 4, "{w:?}");
    }

    #[test]
    fn template_flag() {
        let (p, w) = Params::parse("banger.template=1 banger.hostname=t");
        assert!(p.template && w.is_empty(), "{w:?}");
    }

    #[test]
    fn init_path() {
        let (p, _) = Params::parse("banger.init=/lib/systemd/systemd");
        assert_eq!(p.init, InitMode::Path("/lib/systemd/systemd".into()));
    }
}
