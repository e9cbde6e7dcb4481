//! How both ends of a tar copy (`copy_in` in the agent, `vm cp` out of a
//! guest on the host) put what they received in place whole: the archive
//! is unpacked into a private staging directory inside the destination,
//! and only once it has all arrived is each top entry moved in (a rename;
//! existing directories are merged into, as tar would). A copy whose
//! stream breaks off removes its staging directory and leaves the
//! destination as it was: no half-written file, no half a tree.
//!
//! Landing follows a symlink to a directory that stays inside the
//! destination (`/bin -> usr/bin` when copying into `/`), as unpacking in
//! place would, and refuses one that leads out. A directory on another
//! filesystem (a mount point inside the destination) gets its entries
//! copied, not renamed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The prefix of staging directories; what a crashed copy may leave.
pub const STAGING_PREFIX: &str = ".banger-copy-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh staging directory inside `dest` (an existing directory), only
/// its owner may enter.
pub fn staging_dir(dest: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = dest.join(format!("{STAGING_PREFIX}{}-{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Move every entry of `staging` into `dest` (merging into directories
/// that exist), then remove `staging`. `root` bounds where a symlinked
/// directory may lead (the destination itself, canonical).
///
/// An archive's `.` entry (a tar of a directory's contents) gave the
/// staging directory its mode and mtime: those go to `dest`, as unpacking
/// in place would have set them (told apart by a mode other than the 0700
/// the staging directory is made with).
pub fn land(staging: &Path, dest: &Path) -> io::Result<()> {
    let root = dest.canonicalize()?;
    let own = fs::symlink_metadata(staging)?;
    let outcome = children(staging)
        .and_then(|names| {
            names
                .into_iter()
                .try_for_each(|n| merge(&staging.join(&n), &dest.join(&n), &root))
        })
        .and_then(|()| {
            if own.mode() & 0o7777 != 0o700 {
                set_meta(dest, &own).map_err(|e| at(dest, e))
            } else {
                Ok(())
            }
        });
    let _ = fs::remove_dir_all(staging);
    outcome
}

fn children(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

fn at(p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Put `src` at `dst`: a rename, or for a directory onto a directory, its
/// entries one by one and then its own mode, owner and mtime.
fn merge(src: &Path, dst: &Path, root: &Path) -> io::Result<()> {
    let sm = fs::symlink_metadata(src).map_err(|e| at(src, e))?;
    let dm = match fs::symlink_metadata(dst) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return place(src, dst, &sm),
        Err(e) => return Err(at(dst, e)),
    };
    if sm.is_dir() {
        let target = if dm.is_dir() {
            Some(dst.to_path_buf())
        } else if dm.file_type().is_symlink() {
            // Through a link to a directory, when it stays inside.
            match dst.canonicalize() {
                Ok(real) if real.is_dir() && real.starts_with(root) => Some(real),
                Ok(real) if real.is_dir() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is a link out of {}: not followed",
                            dst.display(),
                            root.display()
                        ),
                    ));
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(target) = target {
            // Entries leave `src`: it must be writable, whatever mode the
            // archive gave it (`sm` keeps that mode for `target`).
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = sm.mode() & 0o7777 | 0o700;
                fs::set_permissions(src, fs::Permissions::from_mode(mode))
                    .map_err(|e| at(src, e))?;
            }
            for n in children(src).map_err(|e| at(src, e))? {
                merge(&src.join(&n), &target.join(&n), root)?;
            }
            set_meta(&target, &sm).map_err(|e| at(&target, e))?;
            return fs::remove_dir(src).map_err(|e| at(src, e));
        }
        // A directory over a file or a dangling link: the file goes.
        fs::remove_file(dst).map_err(|e| at(dst, e))?;
        return place(src, dst, &sm);
    }
    if dm.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: a directory is in the way", dst.display()),
        ));
    }
    // A file or link over a file or link: rename replaces it at once.
    place(src, dst, &sm)
}

/// Rename `src` to `dst` (absent, or a file rename may replace); across
/// filesystems, copy it there and remove it.
fn place(src: &Path, dst: &Path, sm: &fs::Metadata) -> io::Result<()> {
    match fs::rename(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: a mount point inside the destination.
            copy_tree(src, dst, sm)?;
            if sm.is_dir() {
                fs::remove_dir_all(src)
            } else {
                fs::remove_file(src)
            }
            .map_err(|e| at(src, e))
        }
        Err(e) => Err(at(dst, e)),
    }
}

fn copy_tree(src: &Path, dst: &Path, sm: &fs::Metadata) -> io::Result<()> {
    let ft = sm.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| at(src, e))?;
        let _ = fs::remove_file(dst);
        std::os::unix::fs::symlink(&target, dst).map_err(|e| at(dst, e))?;
        return chown(dst, sm, true);
    }
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(at(dst, e)),
        }
        for n in children(src).map_err(|e| at(src, e))? {
            let s = src.join(&n);
            let m = fs::symlink_metadata(&s).map_err(|e| at(&s, e))?;
            copy_tree(&s, &dst.join(&n), &m)?;
        }
        return set_meta(dst, sm).map_err(|e| at(dst, e));
    }
    if !ft.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: a device or fifo cannot be moved across filesystems",
                dst.display()
            ),
        ));
    }
    // Copied beside, then renamed: the destination is never half a file.
    let tmp = dst.with_file_name(format!(
        "{STAGING_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let copied = fs::copy(src, &tmp)
        .and_then(|_| set_meta(&tmp, sm))
        .and_then(|()| fs::rename(&tmp, dst));
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(at(dst, e));
    }
    Ok(())
}

/// `sm`'s mode, mtime and (as root) owner on `path`.
fn set_meta(path: &Path, sm: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    chown(path, sm, false)?;
    fs::set_permissions(path, fs::Permissions::from_mode(sm.mode() & 0o7777))?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(sm.mtime()).unwrap_or(0),
            u32::try_from(sm.mtime_nsec()).unwrap_or(0),
        );
    fs::File::open(path)?.set_times(fs::FileTimes::new().set_modified(mtime))
}

/// Owners are kept where the unpacking could keep them (as root); a user
/// may not give a file away, and keeps it.
fn chown(path: &Path, sm: &fs::Metadata, link: bool) -> io::Result<()> {
    let done = if link {
        std::os::unix::fs::lchown(path, Some(sm.uid()), Some(sm.gid()))
    } else {
        std::os::unix::fs::chown(path, Some(sm.uid()), Some(sm.gid()))
    };
    match done {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    #[test]
    fn lands_whole_merging_into_directories_and_through_inner_links() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        write(&dest.join("keep/old.txt"), "old");
        write(&dest.join("usr/bin/ls"), "ls");
        std::os::unix::fs::symlink("usr/bin", dest.join("bin")).unwrap();
        write(&dest.join("replace.txt"), "before");
        let st = staging_dir(&dest).unwrap();
        write(&st.join("keep/new.txt"), "new");
        write(&st.join("bin/tool"), "tool");
        write(&st.join("replace.txt"), "after");
        write(&st.join("fresh/a/b"), "b");
        land(&st, &dest).unwrap();
        assert!(!st.exists());
        assert_eq!(
            fs::read_to_string(dest.join("keep/old.txt")).unwrap(),
            "old"
        );
        assert_eq!(
            fs::read_to_string(dest.join("keep/new.txt")).unwrap(),
            "new"
        );
        assert!(
            fs::symlink_metadata(dest.join("bin"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(dest.join("usr/bin/tool")).unwrap(),
            "tool"
        );
        assert_eq!(
            fs::read_to_string(dest.join("replace.txt")).unwrap(),
            "after"
        );
        assert_eq!(fs::read_to_string(dest.join("fresh/a/b")).unwrap(), "b");
    }

    #[test]
    fn a_link_out_of_the_destination_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("dest");
        let outside = d.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("out")).unwrap();
        let st = staging_dir(&dest).unwrap();
        write(&st.join("out/evil"), "x");
        let e = land(&st, &dest).unwrap_err();
        assert!(e.to_string().contains("link out of"), "{e}");
        assert!(!outside.join("evil").exists());
        assert!(!st.exists());
    }
}
