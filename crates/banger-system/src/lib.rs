//! What `banger system install|status|restart|uninstall` do, minus the
//! CLI: render the hardened systemd units of the root helper and of the
//! owner's daemon (`units`), write them under an install root, enable and
//! start them through `systemctl`, register split DNS with
//! systemd-resolved where it runs, report their state, and remove all of
//! it again.
//!
//! It does not create the bridge, taps or nftables rules: those are the
//! helper's (banger-net), which the helper makes on the daemon's request
//! and removes on `RemoveBridge`/`RemoveNat`; a caller uninstalling asks the
//! helper for that first, while it still runs. Every systemd call goes
//! through the `Host` trait so tests can record them.

mod host;
mod install;
mod status;
pub mod units;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use host::{Host, Probe, Systemctl, SystemdHost, UnitState};
pub use install::{
    InstallReport, SplitDns, UninstallReport, install, installed_helper, restart, stop_daemon,
    uninstall,
};
pub use status::{BridgeStatus, ServiceStatus, SystemStatus, status};

/// The directory unit files go to, relative to the install root.
pub const UNIT_DIR: &str = "etc/systemd/system";
/// banger-net's nftables table (`inet banger`), reported by `status`.
pub const NFT_FAMILY: &str = "inet";
/// The nftables table banger-net owns.
pub use banger_net::NFT_TABLE;

/// The user whose daemon the helper serves.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    pub uid: u32,
    /// The user name: the daemon unit's instance (`bangerd@<name>.service`)
    /// and its `User=`.
    pub name: String,
}

/// Everything an install needs to know.
#[derive(Clone, Debug)]
pub struct InstallSpec {
    /// The file system root units are written under (`/` in production, a
    /// temp dir in tests); units go to `<root>/etc/systemd/system`.
    pub root: PathBuf,
    /// Where banger is installed: the units run `<prefix>/bin/banger-helper`
    /// and `<prefix>/bin/bangerd`.
    pub prefix: PathBuf,
    pub owner: Owner,
    /// The helper's socket; must be inside `/run/banger-helper`, the only
    /// place its sandbox lets it write.
    pub helper_socket: PathBuf,
    /// The bridge and its address, where the daemon answers DNS.
    pub bridge: String,
    pub bridge_addr: Ipv4Addr,
    /// The helper's policy (`/etc/banger/helper.toml`): its bridge and
    /// guest network, the ports its owner may publish.
    pub policy: banger_helper::PolicyFile,
    /// The VM domain (`vm`): `<name>.<domain>`.
    pub domain: String,
    /// resolvectl, run by the split-DNS unit.
    pub resolvectl: PathBuf,
}

impl InstallSpec {
    /// The defaults banger's config uses (bridge `banger0` at 172.16.0.1,
    /// domain `vm`) for `owner`, with binaries under `prefix`.
    pub fn new(owner: Owner, prefix: impl Into<PathBuf>) -> Self {
        Self {
            root: PathBuf::from("/"),
            prefix: prefix.into(),
            owner,
            helper_socket: PathBuf::from(units::DEFAULT_HELPER_SOCKET),
            bridge: "banger0".into(),
            bridge_addr: Ipv4Addr::new(172, 16, 0, 1),
            policy: banger_helper::PolicyFile::default(),
            domain: "vm".into(),
            resolvectl: PathBuf::from("/usr/bin/resolvectl"),
        }
    }

    /// `<root>/etc/systemd/system`.
    pub fn unit_dir(&self) -> PathBuf {
        unit_dir(&self.root)
    }

    /// The checks `install` makes before touching anything.
    pub fn validate(&self) -> Result<(), SystemError> {
        let bad = |what: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(SystemError::Invalid(format!("{what} {value}: {why}")))
        };
        if self.owner.uid == 0 {
            return bad(
                "owner uid",
                &0,
                "a daemon running as root needs no helper; run bangerd as root instead",
            );
        }
        let name = &self.owner.name;
        if !plain_user_name(name) {
            return bad(
                "owner name",
                &format!("{name:?}"),
                "must be a plain user name ([a-z_][a-z0-9_.-]*, at most 32 characters)",
            );
        }
        let bridge_ok = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self
                .bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !bridge_ok {
            return bad(
                "bridge",
                &format!("{:?}", self.bridge),
                "must be 1-15 characters of [A-Za-z0-9_.-] (a Linux interface name)",
            );
        }
        let domain_ok = !self.domain.is_empty()
            && self.domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return bad(
                "domain",
                &format!("{:?}", self.domain),
                "must be a DNS name such as `vm`",
            );
        }
        let run_dir = Path::new("/run").join(units::HELPER_RUNTIME_DIR);
        if self.helper_socket.parent() != Some(run_dir.as_path()) {
            return bad(
                "helper socket",
                &self.helper_socket.display(),
                &format!(
                    "must be directly inside {}, the helper's runtime directory",
                    run_dir.display()
                ),
            );
        }
        for (what, path) in [
            ("prefix", &self.prefix),
            ("helper socket", &self.helper_socket),
            ("resolvectl", &self.resolvectl),
        ] {
            check_unit_path(what, path)?;
        }
        Ok(())
    }
}

/// A user name as useradd accepts by default (`[a-z_][a-z0-9_.-]*`, at
/// most 32): safe as a unit instance, in a path, and in `User=`.
pub(crate) fn plain_user_name(name: &str) -> bool {
    name.len() <= 32
        && name != "."
        && name != ".."
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// A path going into a unit's `ExecStart=`/`Environment=` line: absolute,
/// and free of what systemd would split or expand (space, quotes, `%`
/// specifiers, `\` escapes, `;` separators).
fn check_unit_path(what: &str, path: &Path) -> Result<(), SystemError> {
    let text = path.to_str().unwrap_or("");
    let plain = !text.is_empty()
        && path.is_absolute()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "%\"'\\;$".contains(c));
    if plain {
        Ok(())
    } else {
        Err(SystemError::Invalid(format!(
            "{what} {}: must be an absolute path without spaces, quotes, `%`, `$`, `\\` or `;`",
            path.display()
        )))
    }
}

fn unit_dir(root: &Path) -> PathBuf {
    root.join(UNIT_DIR)
}

/// Why a `system` command failed. One line each; the CLI prints the chain.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "systemd is not the init system here (no /run/systemd/system), so there is no service to install; run the helper in the foreground instead: sudo {foreground}"
    )]
    NoSystemd { foreground: String },
    #[error("{}: not an executable file; install banger's binaries under this prefix first", path.display())]
    MissingBinary { path: PathBuf },
    #[error("{}: no such directory; is systemd installed under this root?", path.display())]
    NoUnitDir { path: PathBuf },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("banger is not installed under {} (no {})", root.display(), units::HELPER_UNIT)]
    NotInstalled { root: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstallSpec {
        InstallSpec::new(
            Owner {
                uid: 1000,
                name: "alice".into(),
            },
            "/usr/local",
        )
    }

    #[test]
    fn defaults_are_valid() {
        spec().validate().unwrap();
    }

    /// A change that makes a valid spec invalid.
    type Breaks = fn(&mut InstallSpec);

    #[test]
    fn bad_input_is_one_clear_line() {
        let cases: [(Breaks, &str); 9] = [
            (|s| s.owner.uid = 0, "needs no helper"),
            (|s| s.owner.name = "Al ice".into(), "plain user name"),
            (|s| s.owner.name = "a@b".into(), "plain user name"),
            (|s| s.bridge = "x".repeat(16), "interface name"),
            (|s| s.domain = "a..b".into(), "DNS name"),
            (
                |s| s.helper_socket = "/tmp/h.sock".into(),
                "runtime directory",
            ),
            (|s| s.prefix = "usr/local".into(), "absolute path"),
            (|s| s.prefix = "/opt/my banger".into(), "without spaces"),
            (|s| s.prefix = "/opt/%n".into(), "`%`"),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
