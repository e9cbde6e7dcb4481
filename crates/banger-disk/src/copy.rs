//! Point-in-time copies of sparse disk files (a snapshot's disks).
//!
//! VM disks are mostly holes: a 8 GiB work disk may hold a few MiB. The
//! host filesystem here is ext4, which has no reflinks, so a copy must at
//! least not fill the holes: only the data extents the source reports
//! (`SEEK_DATA`/`SEEK_HOLE`) are read and written, and the copy gets the
//! same apparent size, holes included.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{Whence, lseek};

use crate::DiskError;

/// Copies `src` to the new file `dst` (which must not exist), keeping its
/// holes. Returns the bytes of data copied (not the apparent size).
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<u64, DiskError> {
    let mut from = File::open(src).map_err(|e| DiskError::io("open", src, e))?;
    let len = from
        .metadata()
        .map_err(|e| DiskError::io("stat", src, e))?
        .len();
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| DiskError::io("create", dst, e))?;
    to.set_len(len)
        .map_err(|e| DiskError::io("truncate", dst, e))?;
    let seek = |f: &File, off: u64, whence| -> Result<Option<u64>, DiskError> {
        let off = i64::try_from(off)
            .map_err(|_| DiskError::io("seek", src, std::io::Error::other("offset overflow")))?;
        match lseek(f.as_fd(), off, whence) {
            Ok(o) => Ok(Some(o.unsigned_abs())),
            // No data at or after `off`: the rest of the file is a hole.
            Err(Errno::ENXIO) => Ok(None),
            Err(e) => Err(DiskError::io("seek", src, e.into())),
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    let mut off = 0u64;
    while off < len {
        let Some(data) = seek(&from, off, Whence::SeekData)? else {
            break;
        };
        let end = seek(&from, data, Whence::SeekHole)?.unwrap_or(len).min(len);
        from.seek(SeekFrom::Start(data))
            .and_then(|_| to.seek(SeekFrom::Start(data)))
            .map_err(|e| DiskError::io("seek", dst, e))?;
        let mut left = end - data;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = from
                .read(&mut buf[..want])
                .map_err(|e| DiskError::io("read", src, e))?;
            if n == 0 {
                break; // the source shrank under us; what is there is copied
            }
            to.write_all(&buf[..n])
                .map_err(|e| DiskError::io("write", dst, e))?;
            left -= n as u64;
            copied += n as u64;
        }
        off = end;
    }
    to.sync_all().map_err(|e| DiskError::io("sync", dst, e))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_data_and_keeps_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.img");
        let dst = d.path().join("dst.img");
        let mut f = File::create(&src).unwrap();
        f.set_len(256 << 20).unwrap();
        for (at, byte) in [(0u64, 1u8), (100 << 20, 2), ((256 << 20) - 4096, 3)] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&vec![byte; 4096]).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        let copied = sparse_copy(&src, &dst).unwrap();
        assert!(copied < 16 << 20, "copied the holes: {copied}");
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let m = std::fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), 256 << 20);
        assert!(
            m.blocks() * 512 < 16 << 20,
            "dst not sparse: {}",
            m.blocks()
        );
        // Never over an existing file.
        assert!(sparse_copy(&src, &dst).is_err());
    }
}
