//! `system status`: what is installed under the root (read back from the
//! helper unit's `X-Banger*` keys), what systemd says of each unit, and
//! whether the bridge and the nftables table exist.

use std::fmt;
use std::fs;
use std::path::Path;

use crate::host::{Host, Probe, UnitState};
use crate::units::{self, DAEMON_TEMPLATE, HELPER_UNIT, SPLIT_DNS_UNIT};
use crate::{NFT_FAMILY, NFT_TABLE, Owner, SystemError, unit_dir};

/// What an install recorded in the helper unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Installed {
    pub owner: Owner,
    pub bridge: String,
    pub domain: String,
    /// The helper's command line, to run in the foreground without systemd.
    pub exec_start: String,
}

/// One unit: is its file there, and what systemd says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    pub unit: String,
    /// The unit file exists under the install root.
    pub installed: bool,
    pub state: UnitState,
}

/// The bridge named at install.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BridgeStatus {
    pub name: String,
    pub present: bool,
}

/// Everything `banger system status` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SystemStatus {
    /// systemd is the init system (otherwise every state is unknown).
    pub systemd: bool,
    /// The owner recorded at install; `None` when not installed.
    pub owner: Option<Owner>,
    pub helper: ServiceStatus,
    /// `bangerd@<owner>.service`; `None` when no owner is known.
    pub daemon: Option<ServiceStatus>,
    pub split_dns: ServiceStatus,
    /// systemd-resolved holds `~<domain>` for the bridge right now (what
    /// the split-DNS unit sets); `None` when not installed.
    pub split_dns_registered: Option<Probe>,
    pub bridge: Option<BridgeStatus>,
    /// banger-net's `inet banger` table.
    pub nft_table: Probe,
}

/// Gathers the status; never fails on what it cannot learn (that shows as
/// unknown), only on an unreadable unit file.
pub fn status(root: &Path, host: &dyn Host) -> Result<SystemStatus, SystemError> {
    let dir = unit_dir(root);
    let installed = read_installed(root)?;
    let systemd = host.systemd_booted();
    let service = |unit: String, file: &str| ServiceStatus {
        installed: dir.join(file).is_file(),
        state: if systemd {
            host.unit_state(&unit)
        } else {
            UnitState::default()
        },
        unit,
    };
    Ok(SystemStatus {
        systemd,
        helper: service(HELPER_UNIT.to_owned(), HELPER_UNIT),
        daemon: installed
            .as_ref()
            .map(|i| service(units::daemon_unit(&i.owner.name), DAEMON_TEMPLATE)),
        split_dns: service(SPLIT_DNS_UNIT.to_owned(), SPLIT_DNS_UNIT),
        bridge: installed.as_ref().map(|i| BridgeStatus {
            present: host.link_exists(&i.bridge),
            name: i.bridge.clone(),
        }),
        split_dns_registered: installed.as_ref().map(|i| {
            match host.resolved_link_domains(&i.bridge) {
                Ok(domains) if domains.contains(&format!("~{}", i.domain)) => Probe::Yes,
                Ok(_) => Probe::No,
                Err(why) => Probe::Unknown(why),
            }
        }),
        nft_table: host.nft_table(NFT_FAMILY, NFT_TABLE),
        owner: installed.map(|i| i.owner),
    })
}

/// The install recorded in `<root>/etc/systemd/system/banger-helper.service`,
/// `None` if there is none.
pub(crate) fn read_installed(root: &Path) -> Result<Option<Installed>, SystemError> {
    let path = unit_dir(root).join(HELPER_UNIT);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SystemError::Io {
                op: "read",
                path,
                source,
            });
        }
    };
    let key = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
    };
    let broken = |what: &str| {
        SystemError::Invalid(format!(
            "{}: {what}; reinstall with `banger system install`",
            path.display()
        ))
    };
    let name = key("X-BangerOwnerName")
        .filter(|n| crate::plain_user_name(n))
        .ok_or_else(|| broken("no valid X-BangerOwnerName"))?;
    let uid = key("X-BangerOwnerUid")
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| broken("no valid X-BangerOwnerUid"))?;
    let bridge = key("X-BangerBridge").ok_or_else(|| broken("no X-BangerBridge"))?;
    let domain = key("X-BangerDomain").ok_or_else(|| broken("no X-BangerDomain"))?;
    let exec_start = key("ExecStart").ok_or_else(|| broken("no ExecStart"))?;
    Ok(Some(Installed {
        owner: Owner {
            uid,
            name: name.to_owned(),
        },
        bridge: bridge.to_owned(),
        domain: domain.to_owned(),
        exec_start: exec_start.to_owned(),
    }))
}

impl fmt::Display for SystemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Some(o) => writeln!(f, "owner:      {} (uid {})", o.name, o.uid)?,
            None => writeln!(f, "owner:      not installed")?,
        }
        if !self.systemd {
            writeln!(f, "systemd:    not the init system; services cannot run")?;
        }
        let line = |f: &mut fmt::Formatter<'_>, label: &str, s: &ServiceStatus| {
            let state = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
            if s.installed {
                writeln!(
                    f,
                    "{label:<11} {} {} ({})",
                    s.unit,
                    state(&s.state.active),
                    state(&s.state.enabled)
                )
            } else {
                writeln!(f, "{label:<11} {} not installed", s.unit)
            }
        };
        line(f, "helper:", &self.helper)?;
        if let Some(d) = &self.daemon {
            line(f, "daemon:", d)?;
        }
        line(f, "split dns:", &self.split_dns)?;
        if let Some(p) = &self.split_dns_registered {
            writeln!(
                f,
                "resolved:   {}",
                probe(p, "registered", "not registered")
            )?;
        }
        if let Some(b) = &self.bridge {
            let present = if b.present { "present" } else { "absent" };
            writeln!(f, "bridge:     {} {present}", b.name)?;
        }
        let table = probe(&self.nft_table, "present", "absent");
        write!(f, "nft table:  {NFT_FAMILY} {NFT_TABLE} {table}")
    }
}

fn probe(p: &Probe, yes: &str, no: &str) -> String {
    match p {
        Probe::Yes => yes.to_owned(),
        Probe::No => no.to_owned(),
        Probe::Unknown(why) => format!("unknown ({why})"),
    }
}
