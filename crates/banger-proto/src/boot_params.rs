//! The `banger.*` kernel command-line parameters: one type, rendered by
//! the host (the daemon fills in the VM's identity, the VMM driver its
//! disks) and parsed by the agent from `/proc/cmdline`.
//!
//! | parameter | meaning |
//! |---|---|
//! | `banger.root=DEV` | read-only base filesystem (ext4); absent: stay in the initramfs |
//! | `banger.overlay=DEV` | ext4 holding `upper/` and `work/` of the root overlay; absent: tmpfs (changes are lost) |
//! | `banger.work=DEV` | persistent ext4 mounted at `/root` |
//! | `banger.modules=DEV` | read-only ext4 of the kernel's module tree, mounted at `/lib/modules/<release>` |
//! | `banger.hostname=NAME` | hostname |
//! | `banger.init=auto\|none\|PATH` | `auto`: exec `/sbin/init` if the image has one; `none`: agent stays PID 1; `PATH`: exec that |
//! | `banger.ip=ADDR/PREFIX` | IPv4 address of `eth0` |
//! | `banger.gw=ADDR` | default gateway |
//! | `banger.dns=ADDR[,ADDR]` | written to `/etc/resolv.conf` |
//! | `banger.nomodules=NAME[,NAME]` | modules of the initramfs not to load (the host knows this VM has no NIC or no vsock); module loading is a large share of boot under emulation |
//! | `banger.template=1` | stop in the initramfs with only the channel up and wait for an identity over it (a boot template) |
//!
//! `DEV` is a device path (`/dev/vda`) or `serial:NAME`, matched against
//! `/sys/block/*/serial`. QEMU's microvm enumerates virtio-mmio devices in
//! an order that is not the command-line order, so the QEMU driver names
//! disks by serial; Firecracker's order is stable and it passes paths.

use std::fmt;
use std::net::Ipv4Addr;

/// How to pick the init program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InitMode {
    /// `/sbin/init` if present, else stay PID 1.
    #[default]
    Auto,
    /// Stay PID 1.
    None,
    /// Exec this path.
    Path(String),
}

/// The boot parameters of one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `banger.root`.
    pub root: Option<String>,
    /// `banger.overlay`.
    pub overlay: Option<String>,
    /// `banger.work`.
    pub work: Option<String>,
    /// `banger.modules`.
    pub modules: Option<String>,
    /// `banger.ip`: address and prefix length.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// `banger.gw`.
    pub gw: Option<Ipv4Addr>,
    /// `banger.dns`.
    pub dns: Vec<Ipv4Addr>,
    /// `banger.hostname`.
    pub hostname: Option<String>,
    /// `banger.init`.
    pub init: InitMode,
    /// `banger.nomodules`: module names (file stems, `-` and `_`
    /// equivalent) not to load.
    pub skip_modules: Vec<String>,
    /// `banger.template=1`: wait for the identity before binding anything.
    pub template: bool,
    /// A MAC for eth0. Never on the command line: a warm start's identity
    /// sets it (the template's NIC carried another).
    pub mac: Option<[u8; 6]>,
}

impl BootParams {
    /// Parses a whole `/proc/cmdline`. Unknown `banger.*` keys and bad
    /// values are reported in the returned warnings rather than failing the
    /// boot: a guest that comes up without networking is easier to debug
    /// than one that panics as PID 1.
    pub fn parse(cmdline: &str) -> (BootParams, Vec<String>) {
        let mut p = BootParams::default();
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

/// The `banger.*` words, space-separated, in a fixed order; what
/// [`BootParams::parse`] reads back.
impl fmt::Display for BootParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        let disks = [
            ("root", &self.root),
            ("overlay", &self.overlay),
            ("work", &self.work),
            ("modules", &self.modules),
        ];
        for (key, dev) in disks {
            if let Some(dev) = dev {
                words.push(format!("banger.{key}={dev}"));
            }
        }
        if let Some(h) = &self.hostname {
            words.push(format!("banger.hostname={h}"));
        }
        words.push(match &self.init {
            InitMode::Auto => "banger.init=auto".into(),
            InitMode::None => "banger.init=none".into(),
            InitMode::Path(p) => format!("banger.init={p}"),
        });
        if let Some((addr, prefix)) = self.ip {
            words.push(format!("banger.ip={addr}/{prefix}"));
        }
        if let Some(gw) = self.gw {
            words.push(format!("banger.gw={gw}"));
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
            words.push(format!("banger.dns={}", dns.join(",")));
        }
        if !self.skip_modules.is_empty() {
            words.push(format!("banger.nomodules={}", self.skip_modules.join(",")));
        }
        if self.template {
            words.push("banger.template=1".into());
        }
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_params_and_ignores_others() {
        let (p, w) = BootParams::parse(
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
            BootParams::parse("banger.ip=1.2.3.4/40 banger.gw=x banger.init=bogus banger.zz=1");
        assert_eq!(p.ip, None);
        assert_eq!(p.gw, None);
        assert_eq!(p.init, InitMode::Auto);
        assert_eq!(w.len(), 4, "{w:?}");
    }

    #[test]
    fn template_flag() {
        let (p, w) = BootParams::parse("banger.template=1 banger.hostname=t");
        assert!(p.template && w.is_empty(), "{w:?}");
    }

    #[test]
    fn init_path() {
        let (p, _) = BootParams::parse("banger.init=/lib/systemd/systemd");
        assert_eq!(p.init, InitMode::Path("/lib/systemd/systemd".into()));
    }

    #[test]
    fn what_the_host_renders_the_agent_reads_back() {
        let full = BootParams {
            root: Some("serial:banger-base".into()),
            overlay: Some("/dev/vdb".into()),
            work: Some("/dev/vdc".into()),
            modules: Some("serial:banger-modules".into()),
            ip: Some((Ipv4Addr::new(172, 16, 0, 9), 24)),
            gw: Some(Ipv4Addr::new(172, 16, 0, 1)),
            dns: vec![Ipv4Addr::new(172, 16, 0, 1)],
            hostname: Some("web".into()),
            init: InitMode::Path("/sbin/init".into()),
            skip_modules: vec!["vsock".into(), "virtio_net".into()],
            template: true,
            mac: None,
        };
        for p in [full, BootParams::default()] {
            let rendered = p.to_string();
            let (back, warnings) = BootParams::parse(&format!("console=ttyS0 {rendered} quiet"));
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(back, p, "{rendered}");
        }
    }
}
