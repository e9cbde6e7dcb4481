//! The work seed manifest and the work disk built from it.
//!
//! A work seed is a plain directory copied out of an image's `/root`, owned
//! by whoever copied it; the manifest beside it records the owners and modes
//! the entries truly have. [`build_disk_with_manifest`] puts both together:
//! `mkfs.ext4 -d` of the seed, then one debugfs script for the entries whose
//! on-disk owner differs. No copy, fsck or resize on this path.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::DiskError;
use crate::debugfs::apply_owners;
use crate::inode::FileKind;
use crate::mkfs::{MkfsOptions, mkfs_from_dir};
use crate::staging::fix_for;

/// The current manifest format.
pub const SEED_MANIFEST_VERSION: u32 = 1;

/// Owners and modes of a seed directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedManifest {
    pub version: u32,
    pub entries: Vec<SeedEntry>,
}

/// One entry of a [`SeedManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    /// Path relative to the seed root; `.` is the root itself.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    pub kind: FileKind,
}

impl SeedManifest {
    /// Read a manifest from a JSON file.
    pub fn load(path: &Path) -> Result<SeedManifest, DiskError> {
        let bytes = std::fs::read(path).map_err(|e| DiskError::io("read", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| DiskError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Write the manifest as JSON.
    pub fn save(&self, path: &Path) -> Result<(), DiskError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| DiskError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, json).map_err(|e| DiskError::io("write", path, e))
    }
}

/// Build the work disk at `out` from `seed_dir`, with owners and modes from
/// `manifest`. On failure `out` is removed.
pub fn build_disk_with_manifest(
    seed_dir: &Path,
    manifest: &SeedManifest,
    out: &Path,
    size_bytes: u64,
) -> Result<(), DiskError> {
    if manifest.version != SEED_MANIFEST_VERSION {
        return Err(DiskError::Manifest {
            path: seed_dir.display().to_string(),
            reason: format!("unsupported manifest version {}", manifest.version),
        });
    }
    let mut fixes = Vec::new();
    for entry in &manifest.entries {
        let rel = Path::new(&entry.path);
        if !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(DiskError::Manifest {
                path: entry.path.clone(),
                reason: "path must be relative without ..".into(),
            });
        }
        let guest = match entry.path.as_str() {
            "." | "" => "/".to_string(),
            p => format!("/{}", p.trim_start_matches("./")),
        };
        let host = seed_dir.join(rel);
        if let Some(fix) = fix_for(&host, guest, entry.uid, entry.gid, entry.kind, entry.mode)? {
            fixes.push(fix);
        }
    }
    mkfs_from_dir(seed_dir, out, size_bytes, &MkfsOptions::default())?;
    apply_owners(out, &fixes).inspect_err(|_| {
        let _ = std::fs::remove_file(out);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_json_shape_is_stable() {
        let m = SeedManifest {
            version: 1,
            entries: vec![SeedEntry {
                path: ".bashrc".into(),
                uid: 0,
                gid: 0,
                mode: 0o644,
                kind: FileKind::Regular,
            }],
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"entries":[{"path":".bashrc","uid":0,"gid":0,"mode":420,"kind":"regular"}]}"#
        );
        assert!(
            serde_json::from_str::<SeedManifest>(r#"{"version":1,"entries":[],"x":1}"#).is_err()
        );
    }

    #[test]
    fn escaping_entry_is_refused_before_mkfs() {
        let tmp = tempfile::tempdir().unwrap();
        let m = SeedManifest {
            version: 1,
            entries: vec![SeedEntry {
                path: "../etc/passwd".into(),
                uid: 0,
                gid: 0,
                mode: 0o644,
                kind: FileKind::Regular,
            }],
        };
        let out = tmp.path().join("work.ext4");
        let err = build_disk_with_manifest(tmp.path(), &m, &out, 1 << 30).unwrap_err();
        assert!(matches!(err, DiskError::Manifest { .. }), "{err}");
        assert!(!out.exists());
    }
}
