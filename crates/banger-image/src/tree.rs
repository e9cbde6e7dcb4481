//! Reading a finished root tree: size estimate for the base image, the
//! `has_init` check (symlinks resolved inside the root only), and the work
//! seed copy of `/root` with its manifest.
//!
//! Owners come from `lstat` through libc (nix), which fakeroot intercepts, so
//! inside the worker they are the owners the tarball asked for.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use banger_disk::{FileKind, SEED_MANIFEST_VERSION, SeedEntry, SeedManifest};
use nix::sys::stat::{FileStat, Mode, lstat};

use crate::ImageError;

const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;

/// What the base image must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    pub inodes: u64,
    pub bytes: u64,
}

impl TreeUsage {
    /// Image size: content plus inode tables, 25% slack for ext4 metadata
    /// and extent trees, and a fixed 64 MiB floor of headroom; rounded to
    /// 4 MiB.
    pub fn image_size(&self) -> u64 {
        let raw = self.bytes + self.inode_count() * INODE_SIZE;
        let padded = raw + raw / 4 + (64 << 20);
        padded.div_ceil(4 << 20) * (4 << 20)
    }

    /// Inode count with room for the filesystem's own and some spare.
    pub fn inode_count(&self) -> u64 {
        self.inodes + self.inodes / 5 + 1024
    }
}

fn kind_of(st: &FileStat) -> Option<FileKind> {
    FileKind::from_mode(st.st_mode)
}

fn lstat_path(path: &Path) -> Result<FileStat, ImageError> {
    lstat(path).map_err(|e| ImageError::io("stat", path, e.into()))
}

fn read_dir(path: &Path) -> Result<Vec<OsString>, ImageError> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(path).map_err(|e| ImageError::io("read dir", path, e))? {
        names.push(
            item.map_err(|e| ImageError::io("read dir", path, e))?
                .file_name(),
        );
    }
    names.sort();
    Ok(names)
}

/// Walk `root` (not following symlinks) and add up what an ext4 copy needs.
pub fn measure(root: &Path) -> Result<TreeUsage, ImageError> {
    let mut usage = TreeUsage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let st = lstat_path(&path)?;
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue; // another name of an inode already counted
        }
        usage.inodes += 1;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        match kind_of(&st) {
            Some(FileKind::Regular) => usage.bytes += size.div_ceil(BLOCK) * BLOCK,
            // Targets of 60 bytes or more do not fit in the inode.
            Some(FileKind::Symlink) if size >= 60 => usage.bytes += BLOCK,
            Some(FileKind::Directory) => {
                let names = read_dir(&path)?;
                // An ext4 dirent is 8 bytes plus the name, 4-byte aligned.
                let dirents: u64 = names
                    .iter()
                    .map(|n| (8 + n.len() as u64).div_ceil(4) * 4)
                    .sum();
                usage.bytes += (dirents + 24).div_ceil(BLOCK).max(1) * BLOCK;
                stack.extend(names.into_iter().map(|n| path.join(n)));
            }
            _ => {}
        }
    }
    Ok(usage)
}

/// The paths whose presence means the image brings its own init.
pub const INIT_PATHS: [&str; 3] = [
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
];

/// Whether any of [`INIT_PATHS`] resolves, inside `root`, to a regular file.
pub fn has_init(root: &Path) -> Result<bool, ImageError> {
    for path in INIT_PATHS {
        if resolve_in_root(root, path.as_bytes())? == Some(FileKind::Regular) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Resolve `guest_path` as the guest would, with `root` as `/`: absolute
/// symlink targets restart at `root`, `..` stops at `root`. Only paths made
/// of already-checked real directories are ever handed to the host, so no
/// host symlink is followed. Returns the kind of what it names, if anything.
pub fn resolve_in_root(root: &Path, guest_path: &[u8]) -> Result<Option<FileKind>, ImageError> {
    let split = |p: &[u8]| -> Vec<Vec<u8>> {
        p.split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    let mut todo: std::collections::VecDeque<Vec<u8>> = split(guest_path).into();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    let host = |comps: &[Vec<u8>]| -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(comps.iter().map(|c| std::ffi::OsStr::from_bytes(c)));
        p
    };
    while let Some(comp) = todo.pop_front() {
        match comp.as_slice() {
            b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(comp);
        let path = host(&cur);
        let st = match lstat(&path) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return Ok(None),
            Err(e) => return Err(ImageError::io("stat", path, e.into())),
        };
        if kind_of(&st) == Some(FileKind::Symlink) {
            hops += 1;
            if hops > 40 {
                return Ok(None); // a loop, as ELOOP would say
            }
            let target =
                std::fs::read_link(&path).map_err(|e| ImageError::io("read link", &path, e))?;
            let target = target.as_os_str().as_bytes();
            cur.pop();
            if target.starts_with(b"/") {
                cur.clear();
            }
            for (i, c) in split(target).into_iter().enumerate() {
                todo.insert(i, c);
            }
        } else if !todo.is_empty() && kind_of(&st) != Some(FileKind::Directory) {
            return Ok(None);
        }
    }
    let st = lstat_path(&host(&cur))?;
    Ok(kind_of(&st))
}

/// Copy `root/root` into `seed_dir` and describe its true owners and modes.
/// Device nodes and sockets are left out: the work disk is built without
/// privilege and a home directory has no use for them. If `/root` is missing
/// or not a real directory the seed is empty (owned 0:0, mode 0700).
pub fn write_work_seed(root: &Path, seed_dir: &Path) -> Result<(SeedManifest, u64), ImageError> {
    std::fs::create_dir(seed_dir).map_err(|e| ImageError::io("create", seed_dir, e))?;
    let src = root.join("root");
    let mut entries = Vec::new();
    let mut skipped = 0;
    let root_st = lstat(&src)
        .ok()
        .filter(|st| kind_of(st) == Some(FileKind::Directory));
    let Some(root_st) = root_st else {
        entries.push(SeedEntry {
            path: ".".into(),
            uid: 0,
            gid: 0,
            mode: 0o700,
            kind: FileKind::Directory,
        });
        return Ok((
            SeedManifest {
                version: SEED_MANIFEST_VERSION,
                entries,
            },
            0,
        ));
    };
    entries.push(entry_for(".".into(), &root_st, FileKind::Directory));
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for name in read_dir(&src.join(&rel))? {
            let rel_child = rel.join(&name);
            let from = src.join(&rel_child);
            let to = seed_dir.join(&rel_child);
            let st = lstat_path(&from)?;
            let Some(kind) = kind_of(&st) else { continue };
            let rel_str = rel_child
                .to_str()
                .ok_or_else(|| ImageError::NonUtf8 {
                    path: rel_child.clone(),
                })?
                .to_string();
            match kind {
                FileKind::Directory => {
                    std::fs::create_dir(&to).map_err(|e| ImageError::io("create", &to, e))?;
                    chmod(&to, 0o700)?;
                    stack.push(rel_child.clone());
                }
                FileKind::Regular => {
                    if let Some(first) = (st.st_nlink > 1)
                        .then(|| links.get(&(st.st_dev, st.st_ino)))
                        .flatten()
                    {
                        std::fs::hard_link(first, &to)
                            .map_err(|e| ImageError::io("hardlink", &to, e))?;
                    } else {
                        std::fs::copy(&from, &to).map_err(|e| ImageError::io("copy", &from, e))?;
                        // Keep it readable by the daemon; the manifest restores the mode.
                        chmod(&to, (st.st_mode & 0o777) | 0o600)?;
                        links.insert((st.st_dev, st.st_ino), to.clone());
                    }
                }
                FileKind::Symlink => {
                    let target = std::fs::read_link(&from)
                        .map_err(|e| ImageError::io("read link", &from, e))?;
                    std::os::unix::fs::symlink(&target, &to)
                        .map_err(|e| ImageError::io("symlink", &to, e))?;
                }
                FileKind::Fifo => {
                    nix::unistd::mkfifo(&to, Mode::from_bits_truncate(0o600))
                        .map_err(|e| ImageError::io("mkfifo", &to, e.into()))?;
                }
                FileKind::CharDevice | FileKind::BlockDevice | FileKind::Socket => {
                    skipped += 1;
                    continue;
                }
            }
            entries.push(entry_for(rel_str, &st, kind));
        }
    }
    Ok((
        SeedManifest {
            version: SEED_MANIFEST_VERSION,
            entries,
        },
        skipped,
    ))
}

fn entry_for(path: String, st: &FileStat, kind: FileKind) -> SeedEntry {
    SeedEntry {
        path,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        kind,
    }
}

fn chmod(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io("chmod", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"").unwrap();
        // Absolute and relative targets, and one that climbs above the root.
        std::os::unix::fs::symlink("/usr/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../usr/lib/systemd/systemd", root.join("sbin/up"))
            .unwrap();
        assert_eq!(
            resolve_in_root(&root, b"/sbin/init").unwrap(),
            Some(FileKind::Regular)
        );
        assert_eq!(
            resolve_in_root(&root, b"/lib/systemd/systemd").unwrap(),
            Some(FileKind::Regular)
        );
        assert_eq!(
            resolve_in_root(&root, b"/sbin/up").unwrap(),
            Some(FileKind::Regular)
        );
        assert!(has_init(&root).unwrap());

        // A host file reached through an absolute symlink does not count.
        let outside = tmp.path().join("outside-init");
        std::fs::write(&outside, b"").unwrap();
        let root2 = tmp.path().join("root2");
        std::fs::create_dir_all(root2.join("sbin")).unwrap();
        std::os::unix::fs::symlink(&outside, root2.join("sbin/init")).unwrap();
        assert_eq!(resolve_in_root(&root2, b"/sbin/init").unwrap(), None);
        assert!(!has_init(&root2).unwrap());
    }

    #[test]
    fn symlink_loops_end() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", tmp.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", tmp.path().join("b")).unwrap();
        assert_eq!(resolve_in_root(tmp.path(), b"/a").unwrap(), None);
    }

    #[test]
    fn size_grows_with_content() {
        let small = TreeUsage {
            inodes: 10,
            bytes: 1 << 20,
        };
        let big = TreeUsage {
            inodes: 10_000,
            bytes: 500 << 20,
        };
        assert!(small.image_size() >= 64 << 20);
        assert!(big.image_size() > big.bytes + big.inodes * INODE_SIZE);
        assert_eq!(big.image_size() % (4 << 20), 0);
        assert!(big.inode_count() > big.inodes);
    }
}
