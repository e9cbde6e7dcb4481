//! The host-networking checks of `banger doctor`: the root helper, the
//! bridge, IPv4 forwarding, banger's nft table and split DNS, each with
//! the fix that applies to this host.
//!
//! What really happens, which these checks describe: a daemon that runs as
//! root, or reaches a helper serving its uid, creates the bridge, turns on
//! forwarding and writes the nft table when it starts; otherwise
//! networking is off and VMs boot without a NIC. So an absent bridge is
//! only a problem when nothing can create it.

use std::path::PathBuf;

use banger_api::{CheckStatus, DoctorCheck};

use super::{Host, check};
use crate::config::{Config, NetworkMode};

/// What the helper socket answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperFact {
    Reachable {
        socket: PathBuf,
        version: String,
        protocol: u32,
        owner: u32,
    },
    Unreachable {
        socket: PathBuf,
        error: String,
    },
}

/// What systemd-resolved says about the bridge link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedFact {
    /// systemd-resolved does not run on this host.
    NotRunning,
    /// The link's DNS domains (`~vm` once registered).
    Domains(Vec<String>),
    /// It runs but could not be asked (e.g. the bridge does not exist).
    Unknown(String),
}

/// The helper's tables compared with its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TablesFact {
    /// They hold what they should; restored `repairs` times since the
    /// helper started.
    Match { repairs: u64 },
    /// The network is not up: none are wanted.
    NotWanted,
    /// Missing or changed, and why.
    Differ(String),
}

/// What the CLI learnt before judging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// The uid doctor (and so the daemon it would start) runs as.
    pub euid: u32,
    /// The helper protocol this banger speaks.
    pub protocol: u32,
    pub helper: HelperFact,
    /// `inet banger` exists; `Err` says why it could not be learnt.
    pub nft_table: Result<bool, String>,
    /// What the helper says of its tables against what they should hold;
    /// `None` when no helper answered.
    pub nft_match: Option<TablesFact>,
    pub resolved: ResolvedFact,
    /// `banger-split-dns.service` is installed (it registers the bridge
    /// each time it appears).
    pub split_dns_unit: bool,
}

/// Where networking stands before any check: who would make the bridge.
enum Maker {
    /// `network.mode = "none"`.
    Off,
    /// The daemon, in-process as root, or through the helper.
    Daemon(String),
    /// Nobody; why.
    Nobody(String),
}

const INSTALL_FIX: &str = "sudo banger system install (without systemd: sudo banger-helper --owner $(id -u), then restart the daemon: banger daemon stop)";

fn maker(config: &Config, f: &NetworkFacts) -> Maker {
    if config.network.mode == NetworkMode::None {
        return Maker::Off;
    }
    if f.euid == 0 {
        return Maker::Daemon("the daemon runs as root and acts in-process".into());
    }
    match &f.helper {
        HelperFact::Reachable {
            protocol, owner, ..
        } if *protocol == f.protocol && *owner == f.euid => {
            Maker::Daemon("the daemon asks the helper".into())
        }
        HelperFact::Reachable { .. } => {
            Maker::Nobody("the helper does not serve this daemon".into())
        }
        HelperFact::Unreachable { .. } => Maker::Nobody("no helper answers".into()),
    }
}

/// The checks, in the order doctor prints them.
pub fn network_checks(config: &Config, host: &Host, f: &NetworkFacts) -> Vec<DoctorCheck> {
    let net = &config.network;
    let m = maker(config, f);
    // Without a NIC VMs still boot; only `mode = "bridge"` makes that fatal.
    let no_nic = if net.mode == NetworkMode::Bridge {
        CheckStatus::Fail
    } else {
        CheckStatus::Warn
    };
    let mut out = vec![helper_check(config, f, no_nic)];

    let bridge = &net.bridge;
    let bridge_up = host.exists(&format!("/sys/class/net/{bridge}"));
    out.push(match (&m, bridge_up) {
        (Maker::Off, _) => check(
            "bridge",
            CheckStatus::Pass,
            "networking off (network.mode = \"none\"): VMs boot without a NIC",
            "",
        ),
        (_, true) => check(
            "bridge",
            CheckStatus::Pass,
            format!("{bridge} exists ({})", net.bridge_cidr),
            "",
        ),
        (Maker::Daemon(how), false) if !host.exists("/sys/module/bridge") => check(
            "bridge",
            CheckStatus::Warn,
            format!("{bridge} absent ({how}) and the bridge module is not loaded"),
            "modprobe bridge, then restart the daemon (banger daemon stop)",
        ),
        (Maker::Daemon(how), false) => check(
            "bridge",
            CheckStatus::Pass,
            format!(
                "{bridge} absent: created with {} when the daemon starts ({how})",
                net.bridge_cidr
            ),
            "",
        ),
        (Maker::Nobody(why), false) => check(
            "bridge",
            no_nic,
            format!("{bridge} absent and nothing can create it: {why}; VMs boot without a NIC"),
            INSTALL_FIX,
        ),
    });

    let forwarding = std::fs::read_to_string(host.file("/proc/sys/net/ipv4/ip_forward"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    out.push(match (&m, forwarding, bridge_up) {
        (Maker::Off, _, _) => check("forwarding", CheckStatus::Pass, "not needed", ""),
        (_, true, _) => check(
            "forwarding",
            CheckStatus::Pass,
            "net.ipv4.ip_forward = 1",
            "",
        ),
        (_, false, false) => check(
            "forwarding",
            CheckStatus::Pass,
            "net.ipv4.ip_forward = 0: enabled with the bridge when the daemon starts",
            "",
        ),
        (_, false, true) => check(
            "forwarding",
            CheckStatus::Warn,
            format!("{bridge} exists but net.ipv4.ip_forward = 0: guests cannot reach past the host"),
            "restart the daemon (banger daemon stop), which enables it, or sysctl -w net.ipv4.ip_forward=1",
        ),
    });

    out.push(match (&m, &f.nft_table, &f.nft_match) {
        (Maker::Off, _, _) => check("nft table", CheckStatus::Pass, "not needed", ""),
        (_, _, Some(TablesFact::Match { repairs })) => check(
            "nft table",
            CheckStatus::Pass,
            format!(
                "inet/bridge banger hold what the helper wants (NAT, isolation, anti-spoofing, published ports); restored {repairs} times since it started"
            ),
            "",
        ),
        (_, _, Some(TablesFact::Differ(why))) => check(
            "nft table",
            no_nic,
            format!("banger's tables {why}: guests may lack NAT, isolation or anti-spoofing"),
            "the helper restores them within 2 s of a change it sees; if this persists: sudo banger system restart",
        ),
        (_, Ok(true), _) => check(
            "nft table",
            CheckStatus::Pass,
            "inet banger present (NAT, guest isolation, published ports)",
            "",
        ),
        (Maker::Daemon(_), Ok(false), _) if !bridge_up => check(
            "nft table",
            CheckStatus::Pass,
            "inet banger absent: written when the daemon starts",
            "",
        ),
        (_, Ok(false), _) => check(
            "nft table",
            no_nic,
            "inet banger absent: guests have no NAT and no isolation from the host",
            "restart the daemon (banger daemon stop) once it can reach the helper; see the helper check",
        ),
        (_, Err(why), _) => check(
            "nft table",
            CheckStatus::Warn,
            format!("cannot tell: {why}"),
            "sudo banger doctor (listing nftables needs root)",
        ),
    });

    out.push(split_dns_check(config, f, bridge_up, &m));
    out
}

fn helper_check(config: &Config, f: &NetworkFacts, no_nic: CheckStatus) -> DoctorCheck {
    if config.network.mode == NetworkMode::None {
        return check(
            "helper",
            CheckStatus::Pass,
            "not needed (network.mode = \"none\")",
            "",
        );
    }
    match &f.helper {
        HelperFact::Reachable {
            socket,
            version,
            protocol,
            owner,
        } => {
            let at = format!("banger-helper {version} at {}", socket.display());
            if *protocol != f.protocol {
                check(
                    "helper",
                    CheckStatus::Fail,
                    format!(
                        "{at} speaks protocol {protocol}, this banger {}",
                        f.protocol
                    ),
                    "restart the helper from this banger release: sudo banger system restart",
                )
            } else if *owner != f.euid && f.euid != 0 {
                check(
                    "helper",
                    no_nic,
                    format!("{at} serves uid {owner}, not this uid {}", f.euid),
                    "install it for this user: sudo banger system install --owner $(id -un)",
                )
            } else {
                check(
                    "helper",
                    CheckStatus::Pass,
                    format!("{at}, protocol {protocol}, serves uid {owner}"),
                    "",
                )
            }
        }
        HelperFact::Unreachable { socket, .. } if f.euid == 0 => check(
            "helper",
            CheckStatus::Pass,
            format!(
                "not needed: as root the daemon acts in-process (none at {})",
                socket.display()
            ),
            "",
        ),
        HelperFact::Unreachable { error, .. } => check(
            "helper",
            no_nic,
            format!("unreachable: {error}; without it a daemon that is not root gives VMs no NIC"),
            INSTALL_FIX,
        ),
    }
}

fn split_dns_check(config: &Config, f: &NetworkFacts, bridge_up: bool, m: &Maker) -> DoctorCheck {
    let net = &config.network;
    let (domain, addr, bridge) = (&net.domain, net.bridge_cidr.addr(), &net.bridge);
    if matches!(m, Maker::Off) {
        return check("split dns", CheckStatus::Pass, "not needed", "");
    }
    let manual = format!(
        "resolvectl dns {bridge} {addr}; resolvectl domain {bridge} '~{domain}' (or sudo banger system install, which keeps it registered)"
    );
    match &f.resolved {
        ResolvedFact::NotRunning => check(
            "split dns",
            CheckStatus::Warn,
            format!("systemd-resolved does not run: the host resolves no *.{domain} name"),
            &format!(
                "add `server=/{domain}/{addr}` to your dnsmasq configuration (or point your resolver's {domain} zone at {addr})"
            ),
        ),
        ResolvedFact::Domains(d) if d.iter().any(|x| x == &format!("~{domain}")) => check(
            "split dns",
            CheckStatus::Pass,
            format!("systemd-resolved sends *.{domain} to {addr} on {bridge}"),
            "",
        ),
        _ if !bridge_up && f.split_dns_unit => check(
            "split dns",
            CheckStatus::Pass,
            format!("banger-split-dns.service registers ~{domain} when {bridge} appears"),
            "",
        ),
        ResolvedFact::Domains(_) => check(
            "split dns",
            CheckStatus::Warn,
            format!("systemd-resolved runs but does not send *.{domain} to {bridge}"),
            &manual,
        ),
        ResolvedFact::Unknown(why) => check(
            "split dns",
            CheckStatus::Warn,
            format!("systemd-resolved runs; {bridge} not registered ({why})"),
            &manual,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(euid: u32, helper: Option<(u32, u32)>) -> NetworkFacts {
        let socket = PathBuf::from("/run/banger-helper/helper.sock");
        NetworkFacts {
            euid,
            protocol: 1,
            helper: match helper {
                Some((protocol, owner)) => HelperFact::Reachable {
                    socket,
                    version: "0.1.0".into(),
                    protocol,
                    owner,
                },
                None => HelperFact::Unreachable {
                    socket,
                    error: "connect: No such file or directory".into(),
                },
            },
            nft_table: Ok(false),
            nft_match: None,
            resolved: ResolvedFact::NotRunning,
            split_dns_unit: false,
        }
    }

    fn named<'a>(checks: &'a [DoctorCheck], name: &str) -> &'a DoctorCheck {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    fn host(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        for (f, body) in files {
            let p = dir.path().join(f.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, body).unwrap();
        }
        let h = Host {
            root: dir.path().to_path_buf(),
            path_var: None,
        };
        (dir, h)
    }

    #[test]
    fn no_helper_and_not_root_says_vms_get_no_nic_and_how_to_fix() {
        let (_d, h) = host(&[("/sys/module/bridge/x", "")]);
        let checks = network_checks(&Config::default(), &h, &facts(1000, None));
        let helper = named(&checks, "helper");
        assert_eq!(helper.status, CheckStatus::Warn, "{helper:?}");
        assert!(helper.fix.contains("banger system install"), "{helper:?}");
        let bridge = named(&checks, "bridge");
        assert_eq!(bridge.status, CheckStatus::Warn, "{bridge:?}");
        assert!(
            bridge.detail.contains("nothing can create it"),
            "{bridge:?}"
        );
        for c in &checks {
            if c.status != CheckStatus::Pass {
                assert!(!c.fix.is_empty(), "{} has no fix", c.name);
            }
        }
        let mut cfg = Config::default();
        cfg.network.mode = NetworkMode::Bridge;
        let checks = network_checks(&cfg, &h, &facts(1000, None));
        assert_eq!(named(&checks, "helper").status, CheckStatus::Fail);
    }

    #[test]
    fn a_helper_serving_us_means_the_daemon_makes_the_bridge() {
        let (_d, h) = host(&[
            ("/sys/module/bridge/x", ""),
            ("/proc/sys/net/ipv4/ip_forward", "0\n"),
        ]);
        let checks = network_checks(&Config::default(), &h, &facts(1000, Some((1, 1000))));
        assert_eq!(named(&checks, "helper").status, CheckStatus::Pass);
        let bridge = named(&checks, "bridge");
        assert_eq!(bridge.status, CheckStatus::Pass);
        assert!(
            bridge.detail.contains("when the daemon starts"),
            "{bridge:?}"
        );
        assert_eq!(named(&checks, "nft table").status, CheckStatus::Pass);
        // The helper of another uid or release.
        let checks = network_checks(&Config::default(), &h, &facts(1000, Some((1, 1001))));
        assert!(named(&checks, "helper").detail.contains("serves uid 1001"));
        let checks = network_checks(&Config::default(), &h, &facts(1000, Some((2, 1000))));
        let helper = named(&checks, "helper");
        assert_eq!(helper.status, CheckStatus::Fail);
        assert!(helper.fix.contains("system restart"), "{helper:?}");
    }

    #[test]
    fn a_bridge_without_forwarding_or_table_is_reported() {
        let (_d, h) = host(&[
            ("/sys/class/net/banger0/x", ""),
            ("/proc/sys/net/ipv4/ip_forward", "0\n"),
        ]);
        let checks = network_checks(&Config::default(), &h, &facts(0, None));
        assert_eq!(named(&checks, "helper").status, CheckStatus::Pass);
        assert_eq!(named(&checks, "forwarding").status, CheckStatus::Warn);
        assert_eq!(named(&checks, "nft table").status, CheckStatus::Warn);
        let dns = named(&checks, "split dns");
        assert_eq!(dns.status, CheckStatus::Warn);
        assert!(dns.fix.contains("server=/vm/172.16.0.1"), "{dns:?}");
        let mut f = facts(0, None);
        f.resolved = ResolvedFact::Domains(vec!["~vm".into()]);
        f.nft_table = Ok(true);
        let checks = network_checks(&Config::default(), &h, &f);
        assert_eq!(named(&checks, "split dns").status, CheckStatus::Pass);
        assert_eq!(named(&checks, "nft table").status, CheckStatus::Pass);
    }

    #[test]
    fn mode_none_needs_nothing() {
        let (_d, h) = host(&[]);
        let mut cfg = Config::default();
        cfg.network.mode = NetworkMode::None;
        for c in network_checks(&cfg, &h, &facts(1000, None)) {
            assert_eq!(c.status, CheckStatus::Pass, "{c:?}");
        }
    }
}
