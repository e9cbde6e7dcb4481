//! The content-addressed blob cache shared by every pulled image:
//! `<dir>/sha256/<hex>`. A blob is written under a temporary name in the
//! same directory and renamed only after its digest and size were
//! verified, so every file with a final name is complete and correct, and
//! an interrupted pull resumes from the blobs it already finished.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::OciError;
use crate::digest::hex_of;

/// Prefix of in-progress downloads; never a valid hex name.
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// Partial files older than this are abandoned downloads that prune may
/// delete; younger ones may belong to a pull still running.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// A blob cache rooted at a directory the caller owns.
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

/// What [`BlobCache::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
}

impl BlobCache {
    /// Use (and create if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<BlobCache, OciError> {
        let cache = BlobCache {
            root: root.to_path_buf(),
        };
        let dir = cache.sha256_dir();
        std::fs::create_dir_all(&dir).map_err(|e| OciError::io("create", &dir, e))?;
        Ok(cache)
    }

    /// The cache root given to [`BlobCache::open`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn sha256_dir(&self) -> PathBuf {
        self.root.join("sha256")
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn path_of(&self, digest: &str) -> Result<PathBuf, OciError> {
        Ok(self.sha256_dir().join(hex_of(digest)?))
    }

    /// Whether a verified copy of `digest` with `size` bytes is present. A
    /// file of the wrong size (a disk problem or tampering) is not trusted
    /// and is removed so it is fetched again.
    pub fn has(&self, digest: &str, size: u64) -> Result<bool, OciError> {
        let path = self.path_of(digest)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => Ok(true),
            Ok(_) => {
                std::fs::remove_file(&path).map_err(|e| OciError::io("remove", &path, e))?;
                Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(OciError::io("stat", &path, e)),
        }
    }

    /// Remove these blobs (`sha256:<hex>`) if present; absent ones are
    /// skipped. Same caveat as [`BlobCache::prune`] about running pulls.
    pub fn remove_blobs<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a String>,
    ) -> Result<PruneReport, OciError> {
        let mut report = PruneReport::default();
        for digest in digests {
            let path = self.path_of(digest)?;
            let len = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m.len(),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(OciError::io("stat", &path, e)),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OciError::io("remove", &path, e)),
            }
        }
        Ok(report)
    }

    /// Remove every blob whose digest is not in `keep` (`sha256:<hex>`
    /// strings), and abandoned partial downloads. Must not run while a pull
    /// that will reference a removed blob is in progress (the daemon holds
    /// its image lock across both).
    pub fn prune(&self, keep: &HashSet<String>) -> Result<PruneReport, OciError> {
        let dir = self.sha256_dir();
        let mut report = PruneReport::default();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(OciError::io("list", &dir, e)),
        };
        let now = SystemTime::now();
        for entry in entries {
            let entry = entry.map_err(|e| OciError::io("list", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| OciError::io("stat", &path, e))?;
            if !meta.is_file() {
                continue;
            }
            let remove = if name.starts_with(PARTIAL_PREFIX) {
                meta.modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age > STALE_PARTIAL)
            } else {
                !keep.contains(&format!("sha256:{name}"))
            };
            if remove {
                std::fs::remove_file(&path).map_err(|e| OciError::io("remove", &path, e))?;
                report.blobs_removed += 1;
                report.bytes_freed += meta.len();
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_referenced_blobs_and_young_partials() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(tmp.path()).unwrap();
        let keep_d = crate::digest::sha256_of(b"keep");
        let drop_d = crate::digest::sha256_of(b"drop!");
        std::fs::write(cache.path_of(&keep_d).unwrap(), b"keep").unwrap();
        std::fs::write(cache.path_of(&drop_d).unwrap(), b"drop!").unwrap();
        let partial = cache.sha256_dir().join(format!("{PARTIAL_PREFIX}x"));
        std::fs::write(&partial, b"in flight").unwrap();
        let report = cache.prune(&HashSet::from([keep_d.clone()])).unwrap();
        assert_eq!(
            report,
            PruneReport {
                blobs_removed: 1,
                bytes_freed: 5
            }
        );
        assert!(cache.has(&keep_d, 4).unwrap());
        assert!(!cache.path_of(&drop_d).unwrap().exists());
        assert!(partial.exists());
    }

    #[test]
    fn remove_blobs_counts_what_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(tmp.path()).unwrap();
        let a = crate::digest::sha256_of(b"aaa");
        let b = crate::digest::sha256_of(b"bb");
        let absent = crate::digest::sha256_of(b"never stored");
        std::fs::write(cache.path_of(&a).unwrap(), b"aaa").unwrap();
        std::fs::write(cache.path_of(&b).unwrap(), b"bb").unwrap();
        let report = cache.remove_blobs([&a, &absent]).unwrap();
        assert_eq!(
            report,
            PruneReport {
                blobs_removed: 1,
                bytes_freed: 3
            }
        );
        assert!(!cache.path_of(&a).unwrap().exists());
        assert!(cache.has(&b, 2).unwrap());
        assert!(cache.remove_blobs([&"sha256:../x".to_string()]).is_err());
    }

    #[test]
    fn wrong_size_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(tmp.path()).unwrap();
        let d = crate::digest::sha256_of(b"abc");
        std::fs::write(cache.path_of(&d).unwrap(), b"ab").unwrap();
        assert!(!cache.has(&d, 3).unwrap());
        assert!(!cache.path_of(&d).unwrap().exists());
        assert!(cache.path_of("sha256:../../etc").is_err());
    }
}
