//! The seam between `system` commands and the host: systemd (through
//! `systemctl`), the bridge link (sysfs) and the nftables table (`nft`).
//! `SystemdHost` is the real thing; tests implement `Host` to record what
//! would be run, since systemd is not PID 1 on a test machine.

use std::path::Path;
use std::process::Command;

use crate::SystemError;

/// A `systemctl` call `system` commands make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Systemctl {
    DaemonReload,
    /// `enable --now` (start as well).
    EnableNow(Vec<String>),
    /// `enable` only: the unit starts with what it is `WantedBy`.
    Enable(Vec<String>),
    /// `disable --now` (stop as well).
    DisableNow(Vec<String>),
    Start(Vec<String>),
    Stop(Vec<String>),
    Restart(Vec<String>),
}

impl Systemctl {
    /// The argument vector after `systemctl`.
    pub fn args(&self) -> Vec<String> {
        let with = |head: &[&str], units: &[String]| {
            head.iter()
                .map(|s| (*s).to_owned())
                .chain(units.iter().cloned())
                .collect()
        };
        match self {
            Self::DaemonReload => vec!["daemon-reload".into()],
            Self::EnableNow(u) => with(&["enable", "--now"], u),
            Self::Enable(u) => with(&["enable"], u),
            Self::DisableNow(u) => with(&["disable", "--now"], u),
            Self::Start(u) => with(&["start"], u),
            Self::Stop(u) => with(&["stop"], u),
            Self::Restart(u) => with(&["restart"], u),
        }
    }
}

/// What systemd says of one unit (`systemctl show`), `None` when it could
/// not be asked (systemd not running).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    /// `LoadState`: `loaded`, `not-found`...
    pub load: Option<String>,
    /// `ActiveState`: `active`, `inactive`, `failed`...
    pub active: Option<String>,
    /// `UnitFileState`: `enabled`, `disabled`...
    pub enabled: Option<String>,
}

/// A yes/no fact that may be unknowable (no permission, tool missing).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    Yes,
    No,
    Unknown(String),
}

/// Everything `system` commands ask of the host.
pub trait Host {
    /// Whether systemd is the running init (sd_booted(3)).
    fn systemd_booted(&self) -> bool;
    fn systemctl(&self, call: &Systemctl) -> Result<(), SystemError>;
    fn unit_state(&self, unit: &str) -> UnitState;
    fn link_exists(&self, name: &str) -> bool;
    fn nft_table(&self, family: &str, name: &str) -> Probe;
    /// The DNS domains systemd-resolved holds for `link` (`~vm` for a
    /// routing-only one); `Err` with the reason when it cannot be asked.
    fn resolved_link_domains(&self, link: &str) -> Result<Vec<String>, String>;
}

/// The real host: `systemctl`, sysfs and `nft`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemdHost;

impl Host for SystemdHost {
    fn systemd_booted(&self) -> bool {
        // The test sd_booted(3) itself makes: systemd as init creates this
        // directory early; a systemd merely installed never does.
        Path::new("/run/systemd/system").is_dir()
    }

    fn systemctl(&self, call: &Systemctl) -> Result<(), SystemError> {
        let args = call.args();
        let out = Command::new("systemctl")
            .args(&args)
            .output()
            .map_err(|source| SystemError::Spawn {
                tool: "systemctl",
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(SystemError::Command {
            command: format!("systemctl {}", args.join(" ")),
            stderr: first_line(&out.stderr),
        })
    }

    fn unit_state(&self, unit: &str) -> UnitState {
        let out = Command::new("systemctl")
            .args(["show", "-p", "LoadState,ActiveState,UnitFileState", unit])
            .output();
        let Some(out) = out.ok().filter(|o| o.status.success()) else {
            return UnitState::default();
        };
        parse_show(&String::from_utf8_lossy(&out.stdout))
    }

    fn link_exists(&self, name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn resolved_link_domains(&self, link: &str) -> Result<Vec<String>, String> {
        let out = Command::new("resolvectl")
            .args(["domain", link])
            .output()
            .map_err(|e| format!("cannot run resolvectl: {e}"))?;
        if !out.status.success() {
            return Err(first_line(&out.stderr));
        }
        Ok(parse_link_domains(&String::from_utf8_lossy(&out.stdout)))
    }

    fn nft_table(&self, family: &str, name: &str) -> Probe {
        match Command::new("nft")
            .args(["list", "table", family, name])
            .output()
        {
            Err(e) => Probe::Unknown(format!("cannot run nft: {e}")),
            Ok(o) if o.status.success() => Probe::Yes,
            Ok(o) => {
                let err = first_line(&o.stderr);
                if err.contains("No such file or directory") {
                    Probe::No
                } else {
                    Probe::Unknown(err)
                }
            }
        }
    }
}

/// `resolvectl domain LINK` output: `Link 5 (banger0): ~vm other`.
pub(crate) fn parse_link_domains(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once("):"))
        .flat_map(|(_, domains)| domains.split_whitespace().map(str::to_owned))
        .collect()
}

/// `systemctl show -p ...` output (`Key=value` lines).
pub(crate) fn parse_show(text: &str) -> UnitState {
    let mut state = UnitState::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = (!value.is_empty()).then(|| value.to_owned());
        match key {
            "LoadState" => state.load = value,
            "ActiveState" => state.active = value,
            "UnitFileState" => state.enabled = value,
            _ => {}
        }
    }
    state
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_parses() {
        let s = parse_show("LoadState=loaded\nActiveState=active\nUnitFileState=\n");
        assert_eq!(s.load.as_deref(), Some("loaded"));
        assert_eq!(s.active.as_deref(), Some("active"));
        assert_eq!(s.enabled, None);
    }

    #[test]
    fn link_domains_parse() {
        assert_eq!(
            parse_link_domains("Link 7 (banger0): ~vm example.invalid\n"),
            ["~vm", "example.invalid"]
        );
        assert!(parse_link_domains("Link 7 (banger0):\n").is_empty());
    }

    #[test]
    fn argv() {
        let units = vec!["a.service".to_owned(), "b.service".to_owned()];
        assert_eq!(
            Systemctl::EnableNow(units).args(),
            ["enable", "--now", "a.service", "b.service"]
        );
        assert_eq!(Systemctl::DaemonReload.args(), ["daemon-reload"]);
    }
}
