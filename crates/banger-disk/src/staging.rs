//! [`Staging`]: a temporary tree that becomes an ext4 image, where each
//! entry carries the owner and mode it must have *inside* the image.
//!
//! `mkfs.ext4 -d` copies what `lstat` says. As root, the staged files can be
//! chowned for real and nothing else is needed; as a normal user they are
//! owned by that user, so the differences are corrected afterwards with one
//! debugfs script. Only entries whose on-disk owner or mode differ from the
//! wanted ones are fixed, so the root case runs no debugfs at all.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::DiskError;
use crate::debugfs::apply_owners;
use crate::inode::{FileKind, OwnerFix};
use crate::mkfs::{MkfsOptions, mkfs_from_dir};

#[derive(Debug, Clone, Copy)]
struct Wanted {
    uid: u32,
    gid: u32,
    kind: FileKind,
    perm: u32,
}

/// A temporary directory staged for `mkfs.ext4 -d`. The root of the image is
/// always `0:0` with mode `0755`; directories created implicitly as parents
/// get the same.
#[derive(Debug)]
pub struct Staging {
    dir: tempfile::TempDir,
    wanted: BTreeMap<PathBuf, Wanted>,
}

impl Staging {
    /// A new empty staging tree inside `parent` (same filesystem as the
    /// output is best, but not required).
    pub fn new_in(parent: &Path) -> Result<Staging, DiskError> {
        let dir = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(parent)
            .map_err(|e| DiskError::io("create staging dir in", parent, e))?;
        set_perm(dir.path(), 0o755)?;
        Ok(Staging {
            dir,
            wanted: BTreeMap::new(),
        })
    }

    /// The staging directory on the host.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Create directory `rel` (and missing parents).
    pub fn dir(&mut self, rel: &str, uid: u32, gid: u32, perm: u32) -> Result<(), DiskError> {
        let rel = checked_rel(rel)?;
        self.parents(&rel)?;
        let host = self.dir.path().join(&rel);
        match std::fs::create_dir(&host) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && host.is_dir() => {}
            Err(e) => return Err(DiskError::io("create dir", host, e)),
        }
        set_perm(&host, perm)?;
        self.want(rel, uid, gid, FileKind::Directory, perm);
        Ok(())
    }

    /// Write regular file `rel` with `contents` (parents created as needed).
    pub fn file(
        &mut self,
        rel: &str,
        contents: &[u8],
        uid: u32,
        gid: u32,
        perm: u32,
    ) -> Result<(), DiskError> {
        let rel = checked_rel(rel)?;
        self.parents(&rel)?;
        let host = self.dir.path().join(&rel);
        std::fs::write(&host, contents).map_err(|e| DiskError::io("write", &host, e))?;
        set_perm(&host, perm)?;
        self.want(rel, uid, gid, FileKind::Regular, perm);
        Ok(())
    }

    /// Create symlink `rel` pointing at `target` (never followed here).
    pub fn symlink(
        &mut self,
        rel: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> Result<(), DiskError> {
        let rel = checked_rel(rel)?;
        self.parents(&rel)?;
        let host = self.dir.path().join(&rel);
        std::os::unix::fs::symlink(target, &host)
            .map_err(|e| DiskError::io("create symlink", &host, e))?;
        self.want(rel, uid, gid, FileKind::Symlink, 0o777);
        Ok(())
    }

    /// The fix-ups needed after `mkfs.ext4 -d`: entries whose on-disk owner
    /// or mode differ from the wanted ones.
    pub fn owner_fixes(&self) -> Result<Vec<OwnerFix>, DiskError> {
        let mut fixes = Vec::new();
        for (rel, w) in &self.wanted {
            let host = self.dir.path().join(rel);
            let guest = format!("/{}", rel.to_string_lossy());
            if let Some(fix) = fix_for(&host, guest, w.uid, w.gid, w.kind, w.perm)? {
                fixes.push(fix);
            }
        }
        Ok(fixes)
    }

    /// Build the image at `out`: mkfs from this tree, then the owner fix-ups.
    pub fn build(&self, out: &Path, size_bytes: u64, opts: &MkfsOptions) -> Result<(), DiskError> {
        let fixes = self.owner_fixes()?;
        mkfs_from_dir(self.dir.path(), out, size_bytes, opts)?;
        apply_owners(out, &fixes).inspect_err(|_| {
            let _ = std::fs::remove_file(out);
        })
    }

    fn parents(&mut self, rel: &Path) -> Result<(), DiskError> {
        let mut cur = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for comp in parent.components() {
            cur.push(comp);
            let host = self.dir.path().join(&cur);
            if host.is_dir() {
                continue;
            }
            std::fs::create_dir(&host).map_err(|e| DiskError::io("create dir", &host, e))?;
            set_perm(&host, 0o755)?;
            self.want(cur.clone(), 0, 0, FileKind::Directory, 0o755);
        }
        Ok(())
    }

    fn want(&mut self, rel: PathBuf, uid: u32, gid: u32, kind: FileKind, perm: u32) {
        self.wanted.insert(
            rel,
            Wanted {
                uid,
                gid,
                kind,
                perm: perm & 0o7777,
            },
        );
    }
}

/// A relative path without `..`, `.` or root components.
fn checked_rel(rel: &str) -> Result<PathBuf, DiskError> {
    let invalid = |reason| DiskError::InvalidGuestPath {
        path: rel.to_string(),
        reason,
    };
    let path = Path::new(rel);
    if rel.is_empty() {
        return Err(invalid("empty"));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid("must be relative without . or .."));
    }
    if rel.contains(['\n', '\r', '\0']) {
        return Err(invalid("contains a newline or NUL"));
    }
    Ok(path.to_path_buf())
}

fn set_perm(path: &Path, perm: u32) -> Result<(), DiskError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perm & 0o7777))
        .map_err(|e| DiskError::io("chmod", path, e))
}

/// The fix-up that makes the image copy of `host` match the wanted owner and
/// mode, or `None` if `mkfs -d` will already get it right.
pub(crate) fn fix_for(
    host: &Path,
    guest_path: String,
    uid: u32,
    gid: u32,
    kind: FileKind,
    perm: u32,
) -> Result<Option<OwnerFix>, DiskError> {
    let meta = std::fs::symlink_metadata(host).map_err(|e| DiskError::io("stat", host, e))?;
    let on_disk = FileKind::from_mode(meta.mode());
    if on_disk != Some(kind) {
        return Err(DiskError::Manifest {
            path: guest_path,
            reason: format!("wanted {kind:?}, found {on_disk:?} on disk"),
        });
    }
    // A symlink's mode is always 0777 and cannot be changed.
    let perm_differs = kind != FileKind::Symlink && meta.mode() & 0o7777 != perm & 0o7777;
    if meta.uid() == uid && meta.gid() == gid && !perm_differs {
        return Ok(None);
    }
    Ok(Some(OwnerFix {
        guest_path,
        uid,
        gid,
        kind,
        perm: perm_differs.then_some(perm & 0o7777),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escaping_paths() {
        for bad in ["", "/etc/x", "../x", "a/../b", "./a", "a\nb"] {
            assert!(checked_rel(bad).is_err(), "{bad:?} accepted");
        }
        assert!(checked_rel("etc/ssh/sshd_config.d/99-banger.conf").is_ok());
    }

    #[test]
    fn fixes_only_what_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut st = Staging::new_in(tmp.path()).unwrap();
        let me = std::fs::metadata(tmp.path()).unwrap();
        let (uid, gid) = (me.uid(), me.gid());
        st.file("etc/hostname", b"vm\n", uid, gid, 0o644).unwrap();
        st.file("etc/shadowish", b"x", uid.wrapping_add(1), gid, 0o600)
            .unwrap();
        let fixes = st.owner_fixes().unwrap();
        let paths: Vec<&str> = fixes.iter().map(|f| f.guest_path.as_str()).collect();
        // `etc` is wanted 0:0; it only needs a fix when we are not root.
        let expect_etc = uid != 0 || gid != 0;
        assert_eq!(paths.contains(&"/etc"), expect_etc, "{paths:?}");
        assert!(paths.contains(&"/etc/shadowish"));
        assert!(!paths.contains(&"/etc/hostname"));
        let shadow = fixes
            .iter()
            .find(|f| f.guest_path == "/etc/shadowish")
            .unwrap();
        assert_eq!(shadow.perm, None);
        assert_eq!(shadow.uid, uid.wrapping_add(1));
    }
}
