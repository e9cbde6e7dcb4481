//! The scratch-directory discipline: every create builds under `tmp/` in a
//! [`Scratch`] and renames into place when whole; every remove moves the
//! object into `tmp/` before its record goes ([`remove_object`]). What a
//! crash leaves in `tmp/` is removed at the next start.

use std::path::PathBuf;

use crate::Layout;
use crate::error::{CoreResult, internal, store_err};

/// Remove a file or a directory tree, ignoring absence; used on cleanup
/// paths where the error has nowhere better to go than the log.
pub(crate) fn remove_any(path: &std::path::Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cleanup failed");
    }
}

/// Remove an object's directory and its record so that a crash at any
/// point leaves either the whole object or nothing: the directory is moved
/// into scratch, the record deleted (the move is undone if that fails),
/// and only then are the files deleted.
pub(crate) fn remove_object(
    layout: &Layout,
    dir: &std::path::Path,
    label: &str,
    delete_record: impl FnOnce() -> Result<(), banger_store::StoreError>,
) -> CoreResult<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let trash = layout.tmp_dir().join(format!("{label}-rm-{name}"));
    if dir.exists() {
        std::fs::rename(dir, &trash)
            .map_err(|e| internal(&format!("cannot remove {}", dir.display()), &e))?;
    }
    if let Err(e) = delete_record() {
        let _ = std::fs::rename(&trash, dir);
        return Err(store_err(e));
    }
    remove_any(&trash);
    Ok(())
}

/// Remove entries of `dir` whose name is not in `known`.
pub(crate) fn remove_unknown(dir: &std::path::Path, known: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !known.contains(&name) {
            tracing::info!(path = %e.path().display(), "removing leftover of an interrupted operation");
            remove_any(&e.path());
        }
    }
}

/// A scratch directory under `tmp/` removed on drop unless kept; every
/// create builds there and renames into place only when complete.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(layout: &Layout, label: &str) -> std::io::Result<Scratch> {
        let path = layout
            .tmp_dir()
            .join(format!("{label}-{}", crate::alloc::new_id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path, keep: false })
    }
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
    /// Move the scratch dir to `dest` (same filesystem) and stop owning it.
    pub fn persist(mut self, dest: &std::path::Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            remove_any(&self.path);
        }
    }
}
