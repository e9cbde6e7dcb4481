//! `[[file_sync]]`: host files and directories copied into a VM at every
//! start, and the rule that keeps them safe: a host path must lie under the
//! owner's home, judged on the canonical path so neither `..` nor a symlink
//! can lead out of it. The daemon copies what these entries name, as the
//! user, into guests that may run anything: an entry like `/etc/shadow` or
//! `~/link-to-/` would hand another user's or the system's files to a VM.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One `[[file_sync]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// A file or directory under the owner's home (`~/` allowed).
    pub host: PathBuf,
    /// Absolute path in the guest; parent directories are created.
    pub guest: String,
    /// Octal mode for a file (e.g. `"0600"`); default: the host file's mode.
    /// Files inside a synced directory keep their own modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl FileSync {
    /// The checks that need no file system: called at config load.
    pub fn validate(&self, home: &Path) -> Result<(), String> {
        let host = self.host_path(home);
        if !host.is_absolute() {
            return Err(format!(
                "file_sync host path {} must be absolute or start with ~/",
                self.host.display()
            ));
        }
        if host.components().any(|c| c == Component::ParentDir) || !host.starts_with(home) {
            return Err(format!(
                "file_sync host path {} is outside the owner's home {}",
                self.host.display(),
                home.display()
            ));
        }
        if !self.guest.starts_with('/')
            || self.guest == "/"
            || self.guest.split('/').any(|c| c == "..")
        {
            return Err(format!(
                "file_sync guest path {:?} must be an absolute path below /, without ..",
                self.guest
            ));
        }
        self.mode_bits()?;
        // An existing path is judged now too, so a symlink out of the home
        // is reported at load; a missing one is judged again at each start.
        if host.symlink_metadata().is_ok() {
            self.resolve(home)?;
        }
        Ok(())
    }

    /// The host path with `~` expanded (not resolved).
    pub fn host_path(&self, home: &Path) -> PathBuf {
        match self.host.strip_prefix("~") {
            Ok(rest) => home.join(rest),
            Err(_) => self.host.clone(),
        }
    }

    /// The canonical host path, refused unless it is under the canonical
    /// home: called at every start, just before the copy.
    pub fn resolve(&self, home: &Path) -> Result<PathBuf, String> {
        let host = self.host_path(home);
        let real = host
            .canonicalize()
            .map_err(|e| format!("file_sync host path {}: {e}", host.display()))?;
        let real_home = home
            .canonicalize()
            .map_err(|e| format!("the owner's home {}: {e}", home.display()))?;
        if !real.starts_with(&real_home) {
            return Err(format!(
                "file_sync host path {} leads to {}, outside the owner's home {}",
                host.display(),
                real.display(),
                real_home.display()
            ));
        }
        Ok(real)
    }

    /// The mode as bits, if one was given.
    pub fn mode_bits(&self) -> Result<Option<u32>, String> {
        let Some(m) = &self.mode else { return Ok(None) };
        match u32::from_str_radix(m, 8) {
            Ok(bits) if bits <= 0o7777 => Ok(Some(bits)),
            _ => Err(format!(
                "file_sync mode {m:?} for {} must be octal, e.g. \"0644\"",
                self.host.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> FileSync {
        FileSync {
            host: host.into(),
            guest: "/root/x".into(),
            mode: None,
        }
    }

    #[test]
    fn paths_outside_the_home_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert!(
            entry("/etc/passwd")
                .validate(h)
                .unwrap_err()
                .contains("outside")
        );
        assert!(entry("~/../x").validate(h).unwrap_err().contains("outside"));
        assert!(entry("rel").validate(h).unwrap_err().contains("absolute"));
        std::fs::write(h.join("ok"), "x").unwrap();
        entry("~/ok").validate(h).unwrap();
        assert_eq!(
            entry("~/ok").resolve(h).unwrap(),
            h.canonicalize().unwrap().join("ok")
        );
    }

    #[test]
    fn a_symlink_out_of_the_home_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        std::os::unix::fs::symlink("/etc", h.join("etc")).unwrap();
        let e = entry("~/etc/hostname").validate(h).unwrap_err();
        assert!(e.contains("leads to /etc/hostname, outside"), "{e}");
        // A symlink that stays inside is fine.
        std::fs::write(h.join("real"), "x").unwrap();
        std::os::unix::fs::symlink(h.join("real"), h.join("inside")).unwrap();
        entry("~/inside").validate(h).unwrap();
    }

    #[test]
    fn guest_path_and_mode_are_checked() {
        let home = tempfile::tempdir().unwrap();
        let mut e = entry("~/x");
        e.guest = "root/x".into();
        assert!(e.validate(home.path()).is_err());
        e.guest = "/root/../etc/x".into();
        assert!(e.validate(home.path()).is_err());
        e.guest = "/root/x".into();
        e.mode = Some("9".into());
        assert!(e.validate(home.path()).unwrap_err().contains("octal"));
        e.mode = Some("0600".into());
        assert_eq!(e.mode_bits().unwrap(), Some(0o600));
    }
}
