//! What the helper holds between requests, and keeps across its own
//! restart: each guest's binding (tap, address, MAC, egress, published
//! ports), whether the network is up, and whether IPv4 forwarding was
//! off before the helper turned it on. Root's file, in the helper's
//! runtime directory (`/run/banger-helper/state.json`, kept across a
//! restart of the unit by `RuntimeDirectoryPreserve=restart`), written
//! whole by rename after every change.
//!
//! The kernel stays the judge of what exists: at load, a guest whose tap
//! is gone is dropped.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use banger_net::{Guest, TapName};
use serde::{Deserialize, Serialize};

use crate::HelperError;

/// Where the helper unit keeps its state.
pub const DEFAULT_STATE: &str = "/run/banger-helper/state.json";

/// The persistent part of the helper's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// `EnsureNetwork` ran and `RemoveNetwork` did not since: the tables
    /// must exist, and the monitor repairs them.
    pub up: bool,
    /// IPv4 forwarding was off before the helper turned it on (`None`
    /// until it did).
    pub forward_was_off: Option<bool>,
    pub guests: BTreeMap<TapName, Guest>,
}

impl Saved {
    /// Read `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, HelperError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HelperError::Config {
                path: path.to_path_buf(),
                why: format!("unreadable state: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(HelperError::Config {
                path: path.to_path_buf(),
                why: e.to_string(),
            }),
        }
    }

    /// Write the state to `path` by rename, mode 0600.
    pub fn store(&self, path: &Path) -> Result<(), HelperError> {
        let tmp: PathBuf = path.with_extension("json.tmp");
        let io = |e: std::io::Error| HelperError::Config {
            path: path.to_path_buf(),
            why: format!("write state: {e}"),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?)
            .map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(Saved::load(&path).unwrap(), Saved::default());
        let mut s = Saved {
            up: true,
            forward_was_off: Some(true),
            ..Saved::default()
        };
        let tap = TapName::for_vm("0123456789abcdef").unwrap();
        s.guests.insert(
            tap.clone(),
            Guest {
                tap,
                ip: "172.16.0.2".parse().unwrap(),
                mac: "02:01:23:45:67:89".parse().unwrap(),
                egress: banger_net::Egress::None,
                ports: vec![],
            },
        );
        s.store(&path).unwrap();
        assert_eq!(Saved::load(&path).unwrap(), s);
    }
}
