//! Plain data about inodes: file kinds, what `stat` reports, directory
//! entries, and the owner/mode fix-ups applied to an image.

use serde::{Deserialize, Serialize};

/// The type of an inode, as ext4 and `st_mode` know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::Regular => 0o100000,
            FileKind::Directory => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::CharDevice => 0o020000,
            FileKind::BlockDevice => 0o060000,
            FileKind::Fifo => 0o010000,
            FileKind::Socket => 0o140000,
        }
    }

    /// The kind encoded in a full `st_mode`, if it is a known one.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => return None,
        })
    }
}

/// What debugfs `stat` says about one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Stat {
    pub inode: u64,
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub perm: u32,
    pub size: u64,
    pub links: u32,
    /// `(major, minor)` for character and block devices.
    pub device: Option<(u32, u32)>,
    /// The target of a symlink.
    pub symlink_target: Option<Vec<u8>>,
}

/// One entry of a directory listing (`.` and `..` are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub inode: u64,
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
}

/// An owner (and optionally mode) correction for one path inside an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFix {
    /// Absolute path inside the image, e.g. `/etc/hostname`.
    pub guest_path: String,
    pub uid: u32,
    pub gid: u32,
    /// The inode's kind; needed because debugfs sets the whole `i_mode`.
    pub kind: FileKind,
    /// New permission bits (`0o7777` mask), or `None` to keep them.
    pub perm: Option<u32>,
}
