//! All-or-nothing creation of a destination directory.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::KernelError;

/// A temporary directory beside the destination. Dropping it without
/// [`Staging::finish`] removes everything written so far.
pub(crate) struct Staging {
    dir: TempDir,
    dest: PathBuf,
}

impl Staging {
    /// Prepares to build `dest`, which must not exist yet.
    pub(crate) fn new(dest: &Path) -> Result<Staging, KernelError> {
        if fs::symlink_metadata(dest).is_ok() {
            return Err(KernelError::DestinationExists {
                path: dest.to_path_buf(),
            });
        }
        // Beside dest, so the final rename stays on one filesystem.
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent).map_err(KernelError::io("create", parent))?;
        let dir = tempfile::Builder::new()
            .prefix(".banger-import-")
            .tempdir_in(parent)
            .map_err(KernelError::io("create staging directory in", parent))?;
        Ok(Staging {
            dir,
            dest: dest.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where `rel` (a path inside the staging directory) ends up.
    pub(crate) fn final_path(&self, rel: &Path) -> PathBuf {
        self.dest.join(rel)
    }

    /// Moves the staging directory to its destination.
    pub(crate) fn finish(self) -> Result<(), KernelError> {
        fs::rename(self.dir.path(), &self.dest)
            .map_err(KernelError::io("rename into", &self.dest))?;
        // Already moved: nothing left for TempDir's drop to remove.
        let _ = self.dir.keep();
        Ok(())
    }
}
