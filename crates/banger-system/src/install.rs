//! install, restart and uninstall: unit files under the install root plus
//! the `systemctl` calls that enable, restart or remove them.
//!
//! Install is all-or-nothing: if a write or a `systemctl` call fails, the
//! files it wrote are put back as they were (removed, or their previous
//! content restored) and systemd reloaded, so a failed install leaves no
//! half-installed service behind.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::host::{Host, Systemctl};
use crate::status::read_installed;
use crate::units::{self, DAEMON_TEMPLATE, HELPER_CONFIG, HELPER_UNIT, SPLIT_DNS_UNIT};
use crate::{InstallSpec, SystemError, unit_dir};

const RESOLVED_UNIT: &str = "systemd-resolved.service";

/// How the host will resolve `<name>.<domain>`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SplitDns {
    /// systemd-resolved sends `~<domain>` to the bridge (the unit named).
    Resolved { unit: String },
    /// No systemd-resolved: the one line the user must add, and where.
    Manual { hint: String },
}

/// What `install` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InstallReport {
    /// The unit files written.
    pub units: Vec<PathBuf>,
    /// The units enabled and started.
    pub started: Vec<String>,
    pub split_dns: SplitDns,
}

/// What `uninstall` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct UninstallReport {
    /// The unit files removed (none when nothing was installed).
    pub removed: Vec<PathBuf>,
    /// The units stopped and disabled.
    pub disabled: Vec<String>,
}

/// Writes the units, reloads systemd, enables and starts the helper and the
/// owner's daemon, and registers split DNS where systemd-resolved runs.
/// Running it again rewrites the units (an upgrade).
pub fn install(spec: &InstallSpec, host: &dyn Host) -> Result<InstallReport, SystemError> {
    spec.validate()?;
    if !host.systemd_booted() {
        let helper = spec.prefix.join("bin/banger-helper");
        return Err(SystemError::NoSystemd {
            foreground: format!(
                "{} --owner {} --socket {}",
                helper.display(),
                spec.owner.uid,
                spec.helper_socket.display()
            ),
        });
    }
    for path in units::binaries(spec) {
        let executable = fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(SystemError::MissingBinary { path });
        }
    }
    let dir = spec.unit_dir();
    if !dir.is_dir() {
        return Err(SystemError::NoUnitDir { path: dir });
    }

    let resolved = host.unit_state(RESOLVED_UNIT).active.as_deref() == Some("active");
    let mut files = vec![
        (HELPER_UNIT, units::helper_unit(spec)),
        (DAEMON_TEMPLATE, units::daemon_template(spec)),
    ];
    if resolved {
        files.push((SPLIT_DNS_UNIT, units::split_dns_unit(spec)));
    }

    let mut written = Written::default();
    let policy = spec.root.join(HELPER_CONFIG);
    let policy_dir = policy.parent().map(Path::to_path_buf).unwrap_or_default();
    let made_dir = !policy_dir.is_dir();
    let result = (|| {
        // Root's policy for the helper, read at its start: root-owned, and
        // written by root alone (the helper refuses anything else).
        fs::create_dir_all(&policy_dir).map_err(|source| SystemError::Io {
            op: "create",
            path: policy_dir.clone(),
            source,
        })?;
        written.write(&policy, &spec.policy.render())?;
        for (name, text) in &files {
            written.write(&dir.join(name), text)?;
        }
        // A unit file from an earlier install with resolved, now gone.
        if !resolved {
            written.remove(&dir.join(SPLIT_DNS_UNIT))?;
        }
        host.systemctl(&Systemctl::DaemonReload)?;
        let started = vec![HELPER_UNIT.to_owned(), units::daemon_unit(&spec.owner.name)];
        host.systemctl(&Systemctl::EnableNow(started.clone()))?;
        let split_dns = if resolved {
            // Enabled, it starts whenever the bridge appears; start it now
            // too if the bridge is already there.
            let unit = vec![SPLIT_DNS_UNIT.to_owned()];
            host.systemctl(&Systemctl::Enable(unit.clone()))?;
            if host.link_exists(&spec.bridge) {
                host.systemctl(&Systemctl::Start(unit))?;
            }
            SplitDns::Resolved {
                unit: SPLIT_DNS_UNIT.to_owned(),
            }
        } else {
            SplitDns::Manual {
                hint: units::manual_split_dns_hint(spec),
            }
        };
        Ok((started, split_dns))
    })();

    match result {
        Ok((started, split_dns)) => Ok(InstallReport {
            units: written.paths(),
            started,
            split_dns,
        }),
        Err(e) => {
            written.undo(host, spec);
            if made_dir {
                let _ = fs::remove_dir(&policy_dir);
            }
            Err(e)
        }
    }
}

/// Restarts the helper and the owner's daemon. VMs keep running: the
/// daemon unit kills only bangerd (`KillMode=process`).
pub fn restart(root: &Path, host: &dyn Host) -> Result<Vec<String>, SystemError> {
    let installed = read_installed(root)?.ok_or_else(|| SystemError::NotInstalled {
        root: root.to_owned(),
    })?;
    if !host.systemd_booted() {
        return Err(SystemError::NoSystemd {
            foreground: format!("{} (stop the running one first)", installed.exec_start),
        });
    }
    let units = vec![
        HELPER_UNIT.to_owned(),
        units::daemon_unit(&installed.owner.name),
    ];
    host.systemctl(&Systemctl::Restart(units.clone()))?;
    Ok(units)
}

/// Stops the owner's daemon (when installed and systemd runs), so nothing
/// asks the helper for a tap while `uninstall` takes the network down;
/// returns the unit stopped.
pub fn stop_daemon(root: &Path, host: &dyn Host) -> Result<Option<String>, SystemError> {
    let Some(installed) = read_installed(root)? else {
        return Ok(None);
    };
    if !host.systemd_booted() {
        return Ok(None);
    }
    let unit = units::daemon_unit(&installed.owner.name);
    host.systemctl(&Systemctl::Stop(vec![unit.clone()]))?;
    Ok(Some(unit))
}

/// The helper binary the installed unit runs, if banger is installed.
pub fn installed_helper(root: &Path) -> Result<Option<PathBuf>, SystemError> {
    Ok(read_installed(root)?
        .and_then(|i| i.exec_start.split_whitespace().next().map(PathBuf::from)))
}

/// Stops and disables the units, removes their files and reloads systemd;
/// stopping the split-DNS unit reverts the bridge's resolved settings.
/// Removing nothing is not an error (uninstall twice is fine). Also removes
/// the daemon's runtime dir, VM sockets included: stop the VMs first. Ask
/// the helper to remove the bridge and rules before this: it stops here.
pub fn uninstall(root: &Path, host: &dyn Host) -> Result<UninstallReport, SystemError> {
    let dir = unit_dir(root);
    let installed = read_installed(root)?;
    let present = |name: &str| dir.join(name).exists();

    // Stop order comes from the units (the daemon is After= the helper, so
    // it stops first); one transaction for all.
    let mut disabled = Vec::new();
    if let Some(installed) = &installed {
        disabled.push(units::daemon_unit(&installed.owner.name));
    }
    for name in [SPLIT_DNS_UNIT, HELPER_UNIT] {
        if present(name) {
            disabled.push(name.to_owned());
        }
    }
    let booted = host.systemd_booted();
    if booted && !disabled.is_empty() {
        host.systemctl(&Systemctl::DisableNow(disabled.clone()))?;
    }

    let mut removed = Vec::new();
    let policy = root.join(HELPER_CONFIG);
    if fs::remove_file(&policy).is_ok() {
        // The directory too when banger's file was all it held.
        if let Some(dir) = policy.parent() {
            let _ = fs::remove_dir(dir);
        }
        removed.push(policy);
    }
    for name in [SPLIT_DNS_UNIT, DAEMON_TEMPLATE, HELPER_UNIT] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SystemError::Io {
                    op: "remove",
                    path,
                    source,
                });
            }
        }
    }
    if booted && !removed.is_empty() {
        host.systemctl(&Systemctl::DaemonReload)?;
    }
    // The daemon's runtime dir outlives its unit on purpose
    // (RuntimeDirectoryPreserve=yes, for the VMs' sockets); once the unit
    // is gone nothing else would remove it.
    if let Some(installed) = &installed {
        let run = root.join(
            units::daemon_runtime_dir(installed.owner.uid)
                .strip_prefix("/")
                .expect("absolute"),
        );
        match fs::remove_dir_all(&run) {
            Ok(()) => removed.push(run),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SystemError::Io {
                    op: "remove",
                    path: run,
                    source,
                });
            }
        }
    }
    if !booted {
        disabled.clear();
    }
    Ok(UninstallReport { removed, disabled })
}

/// The files an install changed, with what to put back on failure.
#[derive(Default)]
struct Written {
    /// (path, previous content, or `None` if there was no file).
    changes: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Written {
    fn remember(&mut self, path: &Path) -> Result<(), SystemError> {
        let before = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(SystemError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        self.changes.push((path.to_owned(), before));
        Ok(())
    }

    /// Writes through a temporary file renamed into place, so systemd never
    /// reads half a unit.
    fn write(&mut self, path: &Path, text: &str) -> Result<(), SystemError> {
        self.remember(path)?;
        write_atomic(path, text.as_bytes())
    }

    fn remove(&mut self, path: &Path) -> Result<(), SystemError> {
        if !path.exists() {
            return Ok(());
        }
        self.remember(path)?;
        fs::remove_file(path).map_err(|source| SystemError::Io {
            op: "remove",
            path: path.to_owned(),
            source,
        })
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.changes
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Best effort: the install already failed; report that error, not
    /// one from cleaning up.
    fn undo(self, host: &dyn Host, spec: &InstallSpec) {
        let new_units: Vec<String> = self
            .changes
            .iter()
            .filter(|(_, before)| before.is_none())
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_owned))
            .filter(|name| name.ends_with(".service"))
            .map(|name| match name.as_str() {
                DAEMON_TEMPLATE => units::daemon_unit(&spec.owner.name),
                _ => name,
            })
            .collect();
        if !new_units.is_empty() {
            let _ = host.systemctl(&Systemctl::DisableNow(new_units));
        }
        for (path, before) in self.changes.into_iter().rev() {
            let _ = match before {
                Some(bytes) => write_atomic(&path, &bytes),
                None => fs::remove_file(&path).map_err(|source| SystemError::Io {
                    op: "remove",
                    path: path.clone(),
                    source,
                }),
            };
        }
        let _ = host.systemctl(&Systemctl::DaemonReload);
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SystemError> {
    let tmp = path.with_extension("banger-tmp");
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| SystemError::Io { op, path, source }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    // 0644 whatever the umask: unit files are meant to be read by anyone.
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(io("write", &tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io("rename into", path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
