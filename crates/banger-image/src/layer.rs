//! [`LayerApplier`]: applies tar layers to a staging root with OCI layer
//! semantics, without ever writing outside that root.
//!
//! Safety rules (an entry breaking one fails the whole apply with
//! [`ImageError::UnsafeEntry`] naming the layer and entry):
//! - `..` components are rejected anywhere in an entry path, a hardlink
//!   target or a whiteout name. Leading `/` is stripped, so absolute paths are
//!   taken relative to the root, as `tar` and OCI runtimes do.
//! - Every parent component is opened with `openat(O_NOFOLLOW|O_DIRECTORY)`
//!   from the root's descriptor, so a symlink created by an earlier entry is
//!   never traversed: an entry whose parent is a symlink is rejected (image
//!   builders record real paths, so well-formed layers never need this).
//! - The final component is created with `O_EXCL`/`mknodat`/`symlinkat`
//!   relative to the parent descriptor after removing what was there, so it
//!   cannot be a symlink that redirects the write either.
//! - The descriptors of the last walked directory chain are kept, since
//!   tar entries come grouped by directory. A walk first cuts the chain to
//!   the entry's parents, so what an entry removes is never in the chain;
//!   the chain is dropped on every removal besides, so a kept descriptor
//!   always names the directory that is at its path now.
//!
//! Ownership, modes, device nodes and xattrs are set with libc calls (through
//! nix), which `fakeroot` intercepts: run unprivileged, this must happen
//! inside a fakeroot session for owners and devices to be recorded.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

use crate::ImageError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Counts from one applied layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    /// xattrs the filesystem or privilege level refused (e.g. `trusted.*`).
    pub xattrs_skipped: u64,
}

/// Applies layers, in order, onto one root directory.
#[derive(Debug)]
pub struct LayerApplier {
    root: Rc<OwnedFd>,
    root_path: PathBuf,
    /// The directories below the root last walked into, outermost first:
    /// each name with its open descriptor.
    chain: RefCell<Vec<(OsString, Rc<OwnedFd>)>>,
}

/// Metadata common to every created entry.
struct Meta {
    uid: u32,
    gid: u32,
    perm: u32,
    mtime: i64,
}

impl LayerApplier {
    /// Open `root` (an existing directory) as the target of later layers.
    pub fn open(root: &Path) -> Result<LayerApplier, ImageError> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ImageError::io("open root", root, e.into()))?;
        Ok(LayerApplier {
            root: Rc::new(root_fd),
            root_path: root.to_path_buf(),
            chain: RefCell::new(Vec::new()),
        })
    }

    /// The root this applier writes into.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Apply one uncompressed tar stream as layer number `layer`.
    pub fn apply(&mut self, layer: usize, reader: impl Read) -> Result<LayerStats, ImageError> {
        let mut archive = tar::Archive::new(reader);
        let archive_err = |source| ImageError::Archive { layer, source };
        let mut state = LayerState {
            layer,
            written: HashSet::new(),
            ancestors: HashSet::new(),
            dir_times: Vec::new(),
            stats: LayerStats::default(),
        };
        for entry in archive.entries().map_err(archive_err)? {
            let mut entry = entry.map_err(archive_err)?;
            self.apply_entry(&mut state, &mut entry)?;
        }
        // Directory mtimes last: creating their children changed them.
        for (comps, mtime) in std::mem::take(&mut state.dir_times) {
            let Some((name, parents)) = comps.split_last() else {
                set_times(self.root.as_fd(), OsStr::new("."), mtime);
                continue;
            };
            if let Ok(Some(parent)) = self.walk(&state, &display(&comps), parents, false) {
                set_times(parent.as_fd(), name, mtime);
            }
        }
        Ok(state.stats)
    }

    fn apply_entry<R: Read>(
        &self,
        state: &mut LayerState,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ImageError> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let layer = state.layer;
        let unsafe_entry = |reason: &str| ImageError::UnsafeEntry {
            layer,
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let comps = normalize(&raw_path).map_err(unsafe_entry)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        state.stats.entries += 1;
        let meta = read_meta(entry).map_err(|source| ImageError::Entry {
            layer,
            entry: shown.clone(),
            op: "read header of",
            source,
        })?;
        let entry_err = |op: &'static str| {
            let shown = shown.clone();
            move |e: Errno| ImageError::Entry {
                layer,
                entry: shown,
                op,
                source: e.into(),
            }
        };

        let Some((name, parents)) = comps.split_last() else {
            // The root itself ("./"): only its metadata can change.
            if !kind.is_dir() {
                return Err(unsafe_entry("the root must be a directory"));
            }
            self.set_meta(self.root.as_fd(), OsStr::new("."), &meta, false)
                .map_err(entry_err("set metadata of"))?;
            state.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };

        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            state.stats.whiteouts += 1;
            return self.whiteout(state, &shown, parents, name.as_bytes());
        }

        let parent = self
            .walk(state, &shown, parents, true)?
            .ok_or_else(|| unsafe_entry("parent vanished"))?;
        let existing = lstat_at(parent.as_fd(), name).map_err(entry_err("stat"))?;
        let keep_dir = kind.is_dir() && existing.is_some_and(|k| k == SFlag::S_IFDIR);
        if existing.is_some() && !keep_dir {
            if kind.is_hard_link() && self.link_target(state, entry, &shown)? == comps {
                return Ok(()); // a link to itself: nothing to do
            }
            self.forget_chain();
            remove_at(parent.as_fd(), name).map_err(entry_err("replace"))?;
        }

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let fd = openat(
                    parent.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(entry_err("create"))?;
                let mut file = File::from(fd);
                std::io::copy(entry, &mut file).map_err(|source| ImageError::Entry {
                    layer,
                    entry: shown.clone(),
                    op: "write",
                    source,
                })?;
                state.stats.xattrs_skipped += set_xattrs(file.as_fd(), entry);
                // Through the open descriptor: no more lookups by name.
                set_meta_fd(file.as_fd(), &meta).map_err(entry_err("set metadata of"))?;
            }
            EntryType::Directory => {
                if !keep_dir {
                    mkdirat(
                        parent.as_fd(),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(entry_err("create directory"))?;
                }
                if let Ok(dir) = open_dir(parent.as_fd(), name) {
                    state.stats.xattrs_skipped += set_xattrs(dir.as_fd(), entry);
                }
                self.set_meta(parent.as_fd(), name, &meta, false)
                    .map_err(entry_err("set metadata of"))?;
                state.dir_times.push((comps.clone(), meta.mtime));
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("symlink without a target"))?;
                // The target is stored as data and never followed here.
                symlinkat(OsStr::from_bytes(&target), parent.as_fd(), name.as_os_str())
                    .map_err(entry_err("create symlink"))?;
                fchownat(
                    parent.as_fd(),
                    name.as_os_str(),
                    Some(Uid::from_raw(meta.uid)),
                    Some(Gid::from_raw(meta.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(entry_err("chown"))?;
                set_times(parent.as_fd(), name, meta.mtime);
            }
            EntryType::Link => {
                let target = self.link_target(state, entry, &shown)?;
                let (tname, tparents) = target
                    .split_last()
                    .ok_or_else(|| unsafe_entry("hardlink to the root"))?;
                let tparent = self
                    .walk(state, &shown, tparents, false)?
                    .ok_or_else(|| unsafe_entry("hardlink target does not exist"))?;
                match lstat_at(tparent.as_fd(), tname).map_err(entry_err("stat link target of"))? {
                    None => return Err(unsafe_entry("hardlink target does not exist")),
                    Some(SFlag::S_IFDIR) => return Err(unsafe_entry("hardlink to a directory")),
                    Some(_) => {}
                }
                // Flags 0: link the target inode itself, never what it points to.
                linkat(
                    tparent.as_fd(),
                    tname.as_os_str(),
                    parent.as_fd(),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(entry_err("hardlink"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let dev = device(entry).map_err(|source| ImageError::Entry {
                    layer,
                    entry: shown.clone(),
                    op: "read device number of",
                    source,
                })?;
                mknodat(
                    parent.as_fd(),
                    name.as_os_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(entry_err("create node"))?;
                self.set_meta(parent.as_fd(), name, &meta, true)
                    .map_err(entry_err("set metadata of"))?;
            }
            other => {
                return Err(ImageError::UnsupportedEntry {
                    layer,
                    entry: shown,
                    kind: format!("{other:?}"),
                });
            }
        }
        state.written.insert(comps.clone());
        for i in 1..comps.len() {
            state.ancestors.insert(comps[..i].to_vec());
        }
        Ok(())
    }

    /// `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq` hides every
    /// lower entry of its directory.
    fn whiteout(
        &self,
        state: &mut LayerState,
        shown: &str,
        parents: &[OsString],
        name: &[u8],
    ) -> Result<(), ImageError> {
        let layer = state.layer;
        let unsafe_entry = |reason: &str| ImageError::UnsafeEntry {
            layer,
            entry: shown.to_string(),
            reason: reason.to_string(),
        };
        let io_err = |op| {
            move |e: Errno| ImageError::Entry {
                layer,
                entry: shown.to_string(),
                op,
                source: e.into(),
            }
        };
        if name == OPAQUE_MARKER {
            let dir = self
                .walk(state, shown, parents, true)?
                .ok_or_else(|| unsafe_entry("parent vanished"))?;
            self.forget_chain();
            return clear_lower(dir.as_fd(), parents, state)
                .map_err(io_err("clear opaque directory"));
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(unsafe_entry("whiteout of an invalid name"));
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            return Err(unsafe_entry("unknown whiteout marker"));
        }
        let Some(dir) = self.walk(state, shown, parents, false)? else {
            return Ok(()); // nothing below to hide
        };
        let target = OsStr::from_bytes(target);
        if lstat_at(dir.as_fd(), target)
            .map_err(io_err("stat"))?
            .is_some()
        {
            self.forget_chain();
            remove_at(dir.as_fd(), target).map_err(io_err("remove whited-out"))?;
        }
        Ok(())
    }

    fn link_target<R: Read>(
        &self,
        state: &LayerState,
        entry: &tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Vec<OsString>, ImageError> {
        let unsafe_entry = |reason: String| ImageError::UnsafeEntry {
            layer: state.layer,
            entry: shown.to_string(),
            reason,
        };
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| unsafe_entry("hardlink without a target".into()))?;
        normalize(&target).map_err(|r| unsafe_entry(format!("hardlink target: {r}")))
    }

    /// Open the directory `comps` below the root without following any
    /// symlink. With `create`, missing directories are made (0755, owned by
    /// the current, possibly faked, user); without, `None` means missing.
    fn walk(
        &self,
        state: &LayerState,
        shown: &str,
        comps: &[OsString],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, ImageError> {
        let layer = state.layer;
        let mut chain = self.chain.borrow_mut();
        let kept = chain
            .iter()
            .zip(comps)
            .take_while(|((have, _), want)| have == *want)
            .count();
        chain.truncate(kept);
        for comp in &comps[kept..] {
            let cur = chain.last().map_or(&self.root, |(_, fd)| fd).clone();
            let next = match open_dir(cur.as_fd(), comp) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => mkdirat(
                    cur.as_fd(),
                    comp.as_os_str(),
                    Mode::from_bits_truncate(0o755),
                )
                .and_then(|()| open_dir(cur.as_fd(), comp))
                .map_err(|e| ImageError::Entry {
                    layer,
                    entry: shown.to_string(),
                    op: "create parent of",
                    source: e.into(),
                })?,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = match lstat_at(cur.as_fd(), comp) {
                        Ok(Some(SFlag::S_IFLNK)) => "is a symlink",
                        _ => "is not a directory",
                    };
                    return Err(ImageError::UnsafeEntry {
                        layer,
                        entry: shown.to_string(),
                        reason: format!("parent component {:?} {what}", comp),
                    });
                }
                Err(e) => {
                    return Err(ImageError::Entry {
                        layer,
                        entry: shown.to_string(),
                        op: "open parent of",
                        source: e.into(),
                    });
                }
            };
            chain.push((comp.clone(), Rc::new(next)));
        }
        Ok(Some(chain.last().map_or(&self.root, |(_, fd)| fd).clone()))
    }

    /// Drop the kept directory chain: about to remove something, which may
    /// be one of its directories.
    fn forget_chain(&self) {
        self.chain.borrow_mut().clear();
    }

    /// chown, then chmod (chown clears setuid bits), then mtime.
    fn set_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        meta: &Meta,
        times: bool,
    ) -> nix::Result<()> {
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        // Following is safe: the entry was just created by us and is no symlink.
        fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(meta.perm),
            FchmodatFlags::FollowSymlink,
        )?;
        if times {
            set_times(dir, name, meta.mtime);
        }
        Ok(())
    }
}

struct LayerState {
    layer: usize,
    /// Entries this layer wrote, and the directories above them: what an
    /// opaque marker must keep.
    written: HashSet<Vec<OsString>>,
    ancestors: HashSet<Vec<OsString>>,
    dir_times: Vec<(Vec<OsString>, i64)>,
    stats: LayerStats,
}

/// Split an archive path into normal components: `/` and `.` dropped, `..`
/// rejected.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut comps = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains .."),
            c => comps.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(comps)
}

fn display(comps: &[OsString]) -> String {
    let parts: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    parts.join("/")
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        uid: u32::try_from(header.uid()?).map_err(std::io::Error::other)?,
        gid: u32::try_from(header.gid()?).map_err(std::io::Error::other)?,
        perm: header.mode()? & 0o7777,
        mtime: i64::try_from(header.mtime()?).unwrap_or(0),
    };
    // PAX records override the header's numeric fields (ids above 2^21).
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            let value = || {
                ext.value()
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            };
            match ext.key() {
                Ok("uid") => {
                    meta.uid = value()
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(meta.uid)
                }
                Ok("gid") => {
                    meta.gid = value()
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(meta.gid)
                }
                Ok("mtime") => meta.mtime = value().unwrap_or(meta.mtime),
                _ => {}
            }
        }
    }
    Ok(meta)
}

fn device<R: Read>(entry: &tar::Entry<'_, R>) -> std::io::Result<nix::libc::dev_t> {
    let header = entry.header();
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(nix::sys::stat::makedev(u64::from(major), u64::from(minor)))
}

/// Set `SCHILY.xattr.*` PAX records on `fd`; returns how many were refused.
fn set_xattrs<R: Read>(fd: BorrowedFd<'_>, entry: &mut tar::Entry<'_, R>) -> u64 {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return 0;
    };
    let mut skipped = 0;
    for ext in exts.flatten() {
        let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        let Ok(cname) = std::ffi::CString::new(name) else {
            skipped += 1;
            continue;
        };
        let value = ext.value_bytes();
        // SAFETY: fd is a live descriptor, cname is NUL-terminated and value
        // points to value.len() readable bytes for the duration of the call.
        let rc = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            // e.g. trusted.* without privilege, or a filesystem without xattrs.
            skipped += 1;
        }
    }
    skipped
}

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The type of `name` in `dir` without following it, or `None` if absent.
fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Option<SFlag>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(
            st.st_mode & SFlag::S_IFMT.bits(),
        ))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove `name` from `dir`, recursively if it is a directory, never
/// following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    if lstat_at(dir, name)? == Some(SFlag::S_IFDIR) {
        let child = open_dir(dir, name)?;
        for child_name in list(child.as_fd())? {
            remove_at(child.as_fd(), &child_name)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Names in `dir` except `.` and `..`.
fn list(dir: BorrowedFd<'_>) -> nix::Result<Vec<OsString>> {
    let fd = open_dir(dir, OsStr::new("."))?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for item in d.iter() {
        let name = item?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// Remove what lower layers put below `dir`, keeping this layer's entries
/// (and recursing into directories this layer wrote into).
fn clear_lower(dir: BorrowedFd<'_>, path: &[OsString], state: &LayerState) -> nix::Result<()> {
    for name in list(dir)? {
        let mut child = path.to_vec();
        child.push(name.clone());
        let ours = state.written.contains(&child) || state.ancestors.contains(&child);
        if !ours {
            remove_at(dir, &name)?;
        } else if lstat_at(dir, &name)? == Some(SFlag::S_IFDIR) {
            let sub = open_dir(dir, &name)?;
            clear_lower(sub.as_fd(), &child, state)?;
        }
    }
    Ok(())
}

/// [`LayerApplier::set_meta`] for a file open for writing: chown, chmod,
/// then mtime, each on the descriptor.
fn set_meta_fd(fd: BorrowedFd<'_>, meta: &Meta) -> nix::Result<()> {
    nix::unistd::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.perm))?;
    let ts = TimeSpec::new(meta.mtime, 0);
    // Best effort, as in set_times.
    let _ = nix::sys::stat::futimens(fd, &ts, &ts);
    Ok(())
}

fn set_times(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) {
    let ts = TimeSpec::new(mtime, 0);
    // Best effort: a wrong mtime does not make an image unusable.
    let _ = utimensat(dir, name, &ts, &ts, UtimensatFlags::NoFollowSymlink);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[OsString]) -> Vec<&str> {
        v.iter().map(|c| c.to_str().unwrap()).collect()
    }

    /// A tar of `(path, kind, link target or data)` entries owned by us.
    fn tar_of(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, extra) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_uid(u64::from(Uid::current().as_raw()));
            h.set_gid(u64::from(Gid::current().as_raw()));
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            let data = if *kind == EntryType::Regular {
                extra.as_bytes()
            } else {
                if *kind == EntryType::Symlink {
                    h.set_link_name(extra).unwrap();
                }
                &[][..]
            };
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn kept_directory_chain_never_outlives_a_removal() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let mut applier = LayerApplier::open(root.path()).unwrap();
        // The chain holds a/b after the first file; a is then replaced by
        // a symlink out of the root, and a/b/x must land neither in the
        // removed a/b nor through the link.
        let tar = tar_of(&[
            ("a/", EntryType::Directory, ""),
            ("a/b/", EntryType::Directory, ""),
            ("a/b/f", EntryType::Regular, "one"),
            ("a", EntryType::Symlink, outside.path().to_str().unwrap()),
            ("a/b/x", EntryType::Regular, "two"),
        ]);
        let err = applier.apply(0, &tar[..]).unwrap_err();
        assert!(
            matches!(&err, ImageError::UnsafeEntry { entry, .. } if entry == "a/b/x"),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // A whiteout removes a walked directory; recreating it must write
        // into the new one.
        let root = tempfile::tempdir().unwrap();
        let mut applier = LayerApplier::open(root.path()).unwrap();
        let lower = tar_of(&[("d/e/old", EntryType::Regular, "old")]);
        applier.apply(0, &lower[..]).unwrap();
        let upper = tar_of(&[
            ("d/e/keep", EntryType::Regular, "k"),
            ("d/.wh.e", EntryType::Regular, ""),
            ("d/e/new", EntryType::Regular, "new"),
        ]);
        applier.apply(1, &upper[..]).unwrap();
        let e = root.path().join("d/e");
        let mut names: Vec<_> = std::fs::read_dir(&e)
            .unwrap()
            .map(|x| x.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new"]);
        assert_eq!(std::fs::read_to_string(e.join("new")).unwrap(), "new");
    }

    #[test]
    fn normalize_strips_root_and_dots() {
        assert_eq!(
            strs(&normalize(b"/etc/./passwd").unwrap()),
            ["etc", "passwd"]
        );
        assert_eq!(strs(&normalize(b"./usr//bin/").unwrap()), ["usr", "bin"]);
        assert!(normalize(b"./").unwrap().is_empty());
    }

    #[test]
    fn normalize_rejects_dotdot_anywhere() {
        for bad in [&b"../evil"[..], b"/abs/../../evil", b"a/..", b".."] {
            assert!(
                normalize(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A name merely containing dots is fine.
        assert_eq!(strs(&normalize(b"a/..b/c..").unwrap()), ["a", "..b", "c.."]);
    }
}
