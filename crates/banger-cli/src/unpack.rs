//! Unpacking a tar that came out of a guest into a host directory.
//!
//! The guest is not trusted: it is root in its own machine and may run a
//! modified agent, so its archive can hold any names, links and modes. So
//! every write is relative to a descriptor of the destination and resolved
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: no path leaves
//! it, and no symlink is ever followed below it, whoever made the link
//! (the archive makes symlinks as entries, never uses them as paths).
//! Entries must be plain relative names (no `..`, no leading `/`); hard
//! links and device nodes are refused. An existing entry is replaced, not
//! written through: a file or link in the way is unlinked first, a
//! directory kept.
//!
//! Setuid and setgid bits, and owners, are kept only in archive mode
//! (`vm cp --archive`, like `docker cp -a`), and owners only when running
//! as root: otherwise what lands is the caller's, without those bits, so
//! `sudo banger vm cp` cannot be made to plant a setuid-root binary.
//! Directories get their modes and times last, deepest first, re-opened
//! the same way, since their modes may forbid writing into them.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// How strictly the paths below the destination are resolved.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// What to keep of an entry's metadata.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Setuid/setgid bits, and owners when `root`.
    pub archive: bool,
    /// This process may give files away (euid 0).
    pub root: bool,
}

impl Keep {
    fn mode(self, mode: u32) -> Mode {
        let bits = if self.archive { 0o7777 } else { 0o1777 };
        Mode::from_raw_mode(mode & bits)
    }

    fn owners(self) -> bool {
        self.archive && self.root
    }
}

/// The metadata a directory gets once everything under it is written.
struct DirMeta {
    rel: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// A destination directory being filled from an untrusted archive.
pub struct Dest {
    base: OwnedFd,
    label: String,
    keep: Keep,
    dirs: Vec<DirMeta>,
}

impl std::fmt::Debug for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dest").field("label", &self.label).finish()
    }
}

/// An entry's name as relative components, or why it is refused.
pub fn plain_name(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => bail!("entry {}: `..` is not accepted", raw.display()),
            Component::RootDir | Component::Prefix(_) => {
                bail!("entry {}: an absolute name is not accepted", raw.display())
            }
        }
    }
    Ok(out)
}

fn ts(secs: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn ids(uid: u64, gid: u64) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        u32::try_from(uid).ok().map(rustix::fs::Uid::from_raw),
        u32::try_from(gid).ok().map(rustix::fs::Gid::from_raw),
    )
}

impl Dest {
    /// Opens `base` (the user's own path: links in it are the user's and
    /// are followed) as the root of everything written.
    pub fn open(base: &Path, keep: Keep) -> Result<Dest> {
        let fd = rustix::fs::open(
            base,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("open {}", base.display()))?;
        Ok(Dest {
            base: fd,
            label: base.display().to_string(),
            keep,
            dirs: Vec::new(),
        })
    }

    /// Resolves a directory below the base, refusing any symlink on the way.
    fn dir(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        rustix::fs::openat2(
            &self.base,
            rel,
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            BENEATH,
        )
    }

    /// The directory `rel`, made (0700 until its own entry's mode is set)
    /// with any missing parents.
    fn ensure_dir(&self, rel: &Path) -> rustix::io::Result<OwnedFd> {
        match self.dir(rel, OFlags::PATH) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let (parent, name) = split(rel);
        let parent_fd = self.ensure_dir(parent)?;
        match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        self.dir(rel, OFlags::PATH)
    }

    /// Writes one entry at `rel` (plain components, from [`plain_name`]
    /// after the caller's renaming).
    pub fn entry<R: Read>(&mut self, rel: &Path, e: &mut tar::Entry<'_, R>) -> Result<()> {
        if rel.as_os_str().is_empty() || plain_name(rel)? != rel {
            bail!("entry {}: not a plain relative name", rel.display());
        }
        let shown = rel.display().to_string();
        let h = e.header().clone();
        let kind = h.entry_type();
        if kind.is_hard_link() {
            bail!("entry {shown}: hard links are not accepted");
        }
        if kind.is_character_special() || kind.is_block_special() {
            bail!("entry {shown}: device nodes are not accepted");
        }
        let (parent, name) = split(rel);
        let dir = self
            .ensure_dir(parent)
            .map_err(|err| self.refusal(&shown, err))?;
        let existing = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let is_dir =
            |st: &rustix::fs::Stat| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir();
        let mode = h.mode().unwrap_or(0o644);
        let mtime = h.mtime().unwrap_or(0);
        let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        if kind.is_dir() {
            if existing.as_ref().is_some_and(|st| !is_dir(st)) {
                rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                    .with_context(|| format!("replace {shown}"))?;
            }
            if !existing.as_ref().is_some_and(is_dir) {
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                    .with_context(|| format!("create {shown}"))?;
            }
            self.dirs.push(DirMeta {
                rel: rel.to_path_buf(),
                mode,
                uid,
                gid,
                mtime,
            });
            return Ok(());
        }
        if let Some(st) = &existing {
            if is_dir(st) {
                bail!("entry {shown}: a directory is in the way");
            }
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                .with_context(|| format!("replace {shown}"))?;
        }
        let keep = self.keep;
        if kind.is_symlink() {
            let target = e
                .link_name()
                .ok()
                .flatten()
                .with_context(|| format!("entry {shown}: a symlink with no target"))?;
            rustix::fs::symlinkat(target.as_os_str(), &dir, name)
                .with_context(|| format!("create {shown}"))?;
            if keep.owners() {
                let (u, g) = ids(uid, gid);
                rustix::fs::chownat(&dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
                    .with_context(|| format!("chown {shown}"))?;
            }
            rustix::fs::utimensat(&dir, name, &ts(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("set times of {shown}"))?;
            return Ok(());
        }
        let (u, g) = ids(uid, gid);
        if kind.is_fifo() {
            rustix::fs::mkfifoat(&dir, name, Mode::from_raw_mode(0o600))
                .with_context(|| format!("create {shown}"))?;
            // Owner first: chown clears setuid bits. By name: a FIFO cannot
            // be opened without a peer, and nothing else writes here.
            if keep.owners() {
                rustix::fs::chownat(&dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
                    .with_context(|| format!("chown {shown}"))?;
            }
            rustix::fs::chmodat(&dir, name, keep.mode(mode), AtFlags::empty())
                .with_context(|| format!("chmod {shown}"))?;
            rustix::fs::utimensat(&dir, name, &ts(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("set times of {shown}"))?;
            return Ok(());
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            // Pax and GNU extension headers are read by the archive
            // itself; anything else has no place on the host.
            return Ok(());
        }
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .with_context(|| format!("create {shown}"))?;
        let mut file = std::fs::File::from(fd);
        io::copy(e, &mut file).with_context(|| format!("write {shown}"))?;
        if keep.owners() {
            rustix::fs::fchown(&file, u, g).with_context(|| format!("chown {shown}"))?;
        }
        rustix::fs::fchmod(&file, keep.mode(mode)).with_context(|| format!("chmod {shown}"))?;
        rustix::fs::futimens(&file, &ts(mtime)).with_context(|| format!("set times of {shown}"))?;
        Ok(())
    }

    /// Sets the directories' owners, modes and times, deepest first.
    pub fn finish(mut self) -> Result<()> {
        self.dirs.sort_by(|a, b| b.rel.cmp(&a.rel));
        for d in &self.dirs {
            let shown = d.rel.display().to_string();
            let fd = self
                .dir(&d.rel, OFlags::RDONLY)
                .map_err(|err| self.refusal(&shown, err))?;
            if self.keep.owners() {
                let (u, g) = ids(d.uid, d.gid);
                rustix::fs::fchown(&fd, u, g).with_context(|| format!("chown {shown}"))?;
            }
            rustix::fs::fchmod(&fd, self.keep.mode(d.mode))
                .with_context(|| format!("chmod {shown}"))?;
            rustix::fs::futimens(&fd, &ts(d.mtime))
                .with_context(|| format!("set times of {shown}"))?;
        }
        Ok(())
    }

    /// An entry whose directory cannot be reached within the base.
    fn refusal(&self, shown: &str, err: Errno) -> anyhow::Error {
        match err {
            Errno::LOOP | Errno::XDEV | Errno::NOTDIR => anyhow::anyhow!(
                "entry {shown}: its path goes through a symlink or out of {}; refused (files \
                 from a guest are never written through links)",
                self.label
            ),
            _ => anyhow::Error::new(io::Error::from(err)).context(format!("entry {shown}")),
        }
    }
}

/// `rel`'s parent and last component.
fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or(OsStr::from_bytes(b".")),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// An archive entry, its name written raw so `..` and `/` get in.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, &'a [u8]),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Dev(&'a str),
    }

    fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    (n, b"")
                }
                E::File(n, mode, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    (n, data)
                }
                E::Link(n, target) | E::Hard(n, target) => {
                    h.set_entry_type(if matches!(e, E::Link(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    h.set_link_name_literal(target).unwrap();
                    (n, b"")
                }
                E::Dev(n) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(3).unwrap();
                    (n, b"")
                }
            };
            let raw = &mut h.as_old_mut().name;
            raw.fill(0);
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_000_000);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Unpacks `entries` under `base` as `vm cp` does (names taken as
    /// they are): the first refusal, if any.
    fn unpack_all(base: &Path, entries: &[E<'_>], archive: bool) -> Result<()> {
        let bytes = tar_of(entries);
        let mut ar = tar::Archive::new(bytes.as_slice());
        let keep = Keep {
            archive,
            root: rustix::process::geteuid().is_root(),
        };
        let mut d = Dest::open(base, keep)?;
        for e in ar.entries()? {
            let mut e = e?;
            let rel = plain_name(&e.path()?)?;
            d.entry(&rel, &mut e)?;
        }
        d.finish()
    }

    /// A destination and, beside it, a directory standing for the host's
    /// `/etc`: what a hostile archive aims at.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let etc = t.path().join("etc");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&etc).unwrap();
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0").unwrap();
        (t, dest, etc)
    }

    fn untouched(etc: &Path) {
        let m = std::fs::metadata(etc).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o7777,
            0o755,
            "mode of the target changed"
        );
        let names: Vec<_> = std::fs::read_dir(etc)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["passwd"], "something was written into the target");
        assert_eq!(std::fs::read(etc.join("passwd")).unwrap(), b"root:x:0:0");
    }

    #[test]
    fn a_symlinked_directory_is_never_written_through() {
        let (_t, dest, etc) = setup();
        let target = etc.to_str().unwrap();
        // RUSTSEC-2026-0067's shape: the link, then the same name as a
        // directory with a wide mode. The directory replaces the link.
        unpack_all(
            &dest,
            &[
                E::Dir("d/", 0o755),
                E::Link("d/a", target),
                E::Dir("d/a/", 0o777),
            ],
            false,
        )
        .unwrap();
        untouched(&etc);
        assert!(dest.join("d/a").symlink_metadata().unwrap().is_dir());
        // A file through the link is refused, naming the entry.
        let (_t, dest, etc) = setup();
        let err = unpack_all(
            &dest,
            &[
                E::Dir("d/", 0o755),
                E::Link("d/a", etc.to_str().unwrap()),
                E::File("d/a/passwd", 0o644, b"evil"),
            ],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("d/a/passwd") && err.contains("symlink"),
            "{err}"
        );
        untouched(&etc);
        // A relative link out, then a write through it.
        let (_t, dest, etc) = setup();
        let err = unpack_all(
            &dest,
            &[E::Link("up", "../etc"), E::File("up/x", 0o644, b"evil")],
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        untouched(&etc);
        // The links themselves land as links, unfollowed.
        assert_eq!(
            std::fs::read_link(dest.join("up")).unwrap(),
            Path::new("../etc")
        );
    }

    #[test]
    fn a_link_the_user_has_in_the_destination_is_not_followed_either() {
        let (_t, dest, etc) = setup();
        std::os::unix::fs::symlink(&etc, dest.join("sub")).unwrap();
        let err = unpack_all(&dest, &[E::File("sub/passwd", 0o644, b"evil")], false).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        untouched(&etc);
    }

    #[test]
    fn dotdot_absolute_hard_links_and_devices_are_refused() {
        let (_t, dest, etc) = setup();
        for (entries, what) in [
            (vec![E::File("../etc/passwd", 0o644, b"x")], "`..`"),
            (vec![E::File("d/../../etc/passwd", 0o644, b"x")], "`..`"),
            (vec![E::File("/etc/passwd", 0o644, b"x")], "absolute"),
            (vec![E::Hard("h", "/etc/passwd")], "hard link"),
            (vec![E::Dev("null")], "device node"),
        ] {
            let err = unpack_all(&dest, &entries, false).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
        untouched(&etc);
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn setuid_bits_and_owners_only_in_archive_mode() {
        let (_t, dest, _etc) = setup();
        let entries = [
            E::Dir("d/", 0o2755),
            E::File("d/su", 0o4755, b"#!/bin/sh\n"),
            E::File("d/plain", 0o640, b"x"),
        ];
        unpack_all(&dest, &entries, false).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("d/su"), 0o755);
        assert_eq!(mode("d"), 0o755);
        assert_eq!(mode("d/plain"), 0o640);
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(std::fs::metadata(dest.join("d/su")).unwrap().uid(), me);
        assert_eq!(
            std::fs::metadata(dest.join("d/su")).unwrap().mtime(),
            1_000_000
        );
        // Again over the same tree, asked to keep everything.
        unpack_all(&dest, &entries, true).unwrap();
        assert_eq!(mode("d/su"), 0o4755);
        assert_eq!(mode("d"), 0o2755);
    }

    #[test]
    fn existing_entries_are_replaced_not_written_through() {
        let (_t, dest, etc) = setup();
        // A file where a directory comes, then a link where a file comes.
        std::fs::write(dest.join("a"), "old").unwrap();
        std::os::unix::fs::symlink(etc.join("passwd"), dest.join("f")).unwrap();
        unpack_all(
            &dest,
            &[E::Dir("a/", 0o755), E::File("f", 0o644, b"new")],
            false,
        )
        .unwrap();
        assert!(dest.join("a").is_dir());
        assert!(!dest.join("f").symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"new");
        untouched(&etc);
        // A directory where a file comes is refused, not emptied.
        let err = unpack_all(&dest, &[E::File("a", 0o644, b"x")], false).unwrap_err();
        assert!(err.to_string().contains("directory is in the way"), "{err}");
    }
}
