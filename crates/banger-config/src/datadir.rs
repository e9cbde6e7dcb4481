//! Whether a data directory is this user's alone.
//!
//! Everything banger trusts lives in the data dir: the database, the VMs'
//! disks, banger's SSH key and known_hosts, the daemon's lock. Another
//! user who can write into it, or into the directory holding it, can swap
//! a subdirectory for a link and have the daemon's cleanup or writes land
//! where they choose. So [`crate::Layout::ensure`] refuses, in one line:
//!
//! - the data dir, or one of banger's subdirectories, owned by another
//!   user or writable by group or others;
//! - a data dir whose parent is writable by group or others (`/tmp`, even
//!   with its sticky bit: there another user could have made the name
//!   first);
//! - an ancestor further up that others can write without the sticky bit.
//!
//! And one spelling per directory ([`canonical`]): links and `..` in the
//! given path are resolved as far as it exists, so a symlinked path and
//! the real one name one data dir, one lock and one daemon.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why a data directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Owned by someone else.
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}); banger keeps its data only in \
         directories of your own (set BANGER_HOME or data_dir to one)"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our uid.
        me: u32,
    },
    /// Writable by others.
    #[error(
        "{path} is writable by other users (mode {mode:04o}); banger keeps its data only where \
         no one else can write (chmod go-w it, or set BANGER_HOME or data_dir elsewhere)"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Its parent is writable by others.
    #[error(
        "{path} is in {parent}, which other users can write (mode {mode:04o}); banger keeps its \
         data only where no one else can make or swap it (use a directory of your own, e.g. \
         under your home, or $(mktemp -d)/banger)"
    )]
    SharedParent {
        /// The data dir.
        path: PathBuf,
        /// Its parent or an ancestor.
        parent: PathBuf,
        /// The ancestor's permission bits.
        mode: u32,
    },
    /// Not a directory (a link left where a directory belongs).
    #[error("{path} is not a directory (banger never makes links there); remove it")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A filesystem call failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `path` with links and `..` resolved as far as it exists, the rest
/// appended as written (less `.`): the same for every spelling of one
/// directory, whether or not it exists yet.
pub fn canonical(path: &Path) -> PathBuf {
    let parts: Vec<Component<'_>> = path.components().collect();
    for split in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..split].iter().collect();
        let Ok(mut out) = head.canonicalize() else {
            continue;
        };
        for part in &parts[split..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        return out;
    }
    // Nothing of it exists (a relative path in a vanished cwd): the
    // lexical form is all there is.
    parts
        .into_iter()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// `dir` is a real directory of ours that no one else can write.
pub fn check_own(dir: &Path) -> Result<(), DataDirError> {
    let m = std::fs::symlink_metadata(dir).map_err(|source| DataDirError::Io {
        op: "inspect",
        path: dir.to_path_buf(),
        source,
    })?;
    if !m.is_dir() {
        return Err(DataDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    if m.uid() != euid() {
        return Err(DataDirError::Foreign {
            path: dir.to_path_buf(),
            owner: m.uid(),
            me: euid(),
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(DataDirError::Writable {
            path: dir.to_path_buf(),
            mode: m.mode() & 0o7777,
        });
    }
    Ok(())
}

/// No one else can make, rename or replace `data_dir`: its parent is
/// writable only by its owner (root or us), and every ancestor above that
/// others can write has the sticky bit.
pub fn check_ancestors(data_dir: &Path) -> Result<(), DataDirError> {
    let mut first = true;
    for ancestor in data_dir.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(ancestor) else {
            // Made by `ensure` below an existing one that was checked.
            continue;
        };
        let others_write = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        if others_write && (first || !sticky) {
            return Err(DataDirError::SharedParent {
                path: data_dir.to_path_buf(),
                parent: ancestor.to_path_buf(),
                mode: m.mode() & 0o7777,
            });
        }
        if m.uid() != 0 && m.uid() != euid() {
            return Err(DataDirError::Foreign {
                path: ancestor.to_path_buf(),
                owner: m.uid(),
                me: euid(),
            });
        }
        first = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_spelling_is_one_path_existing_or_not() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().canonicalize().unwrap().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        for p in ["link", "link/", "./link", "real/../link", "real/./"] {
            assert_eq!(canonical(&t.path().join(p)), real, "{p}");
        }
        // Not there yet: resolved as far as it exists.
        assert_eq!(canonical(&t.path().join("link/a/b")), real.join("a/b"));
        assert_eq!(canonical(&t.path().join("link/a/../c")), real.join("c"));
    }

    #[test]
    fn a_dir_others_can_write_or_sitting_in_a_shared_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        let data = base.join("data");
        std::fs::create_dir(&data).unwrap();
        check_own(&data).unwrap();
        check_ancestors(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_own(&data).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
        // In a world-writable directory, sticky or not.
        for mode in [0o1777, 0o777] {
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = check_ancestors(&data).unwrap_err().to_string();
            assert!(err.contains("which other users can write"), "{err}");
        }
        // Further up, the sticky bit is enough (as /tmp above a private dir).
        let deep = data.join("x");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_ancestors(&deep).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_ancestors(&deep).is_err());
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A link where a directory belongs.
        std::os::unix::fs::symlink(&base, base.join("l")).unwrap();
        let err = check_own(&base.join("l")).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
