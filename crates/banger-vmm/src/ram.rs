//! A boot template's RAM image, shared copy-on-write by the VMs restored
//! from it, and safe from all of them.
//!
//! A warm start maps the template's RAM privately: pages a guest only
//! reads stay one copy in the host's memory for every VM of the template,
//! and the restore reads only the device state. But QEMU discards guest
//! RAM of a file-backed block (free page reporting, a balloon inflating)
//! by punching a hole in the *file* before it drops its own pages
//! (`ram_block_discard_range`: `fallocate(PUNCH_HOLE)`, then `madvise`).
//! Through a private mapping of a shared template that would zero those
//! pages under every other VM that has not written them yet.
//!
//! So the image a VMM maps is never the template file itself but a memfd
//! holding a copy of its data, sealed against writes, growth and shrinking
//! (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK`, then `F_SEAL_SEAL`). A
//! private writable mapping of a write-sealed memfd is allowed (it is
//! copy-on-write); a hole punch fails with `EPERM`, so a discard leaves
//! the guest's page as it is and cannot reach another VM. The memfd lives
//! as long as someone holds it: the daemon (to start more VMs) and every
//! VMM mapping it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::unistd::{Whence, lseek};

/// Bytes copied per read while loading an image.
const CHUNK: usize = 1 << 20;
/// The unit checked for zeros: a page of guest RAM.
const PAGE: usize = 4096;

/// A sealed, read-only-for-everyone copy of a RAM image.
#[derive(Debug)]
pub struct SealedRam {
    fd: OwnedFd,
    len: u64,
    data_bytes: u64,
}

impl SealedRam {
    /// Copies the data of the (sparse) file at `path` into a new memfd of
    /// the same length, holes left as holes, and seals it. Pages of zeros
    /// are left as holes too (a guest reads zeros from either): ~a quarter
    /// of a template's data, measured, that the memfd then does not hold.
    pub fn load(path: &Path) -> io::Result<SealedRam> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        let src = File::open(path).map_err(|e| ctx("open", e))?;
        let len = src.metadata().map_err(|e| ctx("stat", e))?.len();
        let fd = memfd_create(
            "banger-template-ram",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| ctx("memfd for", e.into()))?;
        let dst = File::from(fd);
        dst.set_len(len).map_err(|e| ctx("size the memfd for", e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut data_bytes = 0;
        for (start, end) in data_regions(&src, len).map_err(|e| ctx("map the data of", e))? {
            let mut at = start;
            while at < end {
                let want = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = src
                    .read_at(&mut buf[..want], at)
                    .map_err(|e| ctx("read", e))?;
                if n == 0 {
                    break;
                }
                for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                    if page.iter().all(|&b| b == 0) {
                        continue;
                    }
                    dst.write_all_at(page, at + (i * PAGE) as u64)
                        .map_err(|e| ctx("copy into the memfd", e))?;
                    data_bytes += page.len() as u64;
                }
                at += n as u64;
            }
        }
        let fd = OwnedFd::from(dst);
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(|e| ctx("seal the memfd of", e.into()))?;
        Ok(SealedRam {
            fd,
            len,
            data_bytes,
        })
    }

    /// The image's length (the guest's RAM size).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of data copied (the rest are holes, read as zeros: the
    /// file's holes and its pages of zeros).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The descriptor, for a VMM to inherit ([`crate::GuestRam::MappedImage`]).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for SealedRam {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The `[start, end)` ranges of `f` holding data, by `SEEK_DATA` and
/// `SEEK_HOLE`.
fn data_regions(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at: i64 = 0;
    let end = i64::try_from(len).unwrap_or(i64::MAX);
    while at < end {
        let start = match lseek(f, at, Whence::SeekData) {
            Ok(s) => s,
            // ENXIO: no data after `at`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let stop = lseek(f, start, Whence::SeekHole)?;
        out.push((
            u64::try_from(start).unwrap_or(0),
            u64::try_from(stop).unwrap_or(0),
        ));
        at = stop;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_image_keeps_data_and_holes_and_refuses_punches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ram");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"page one", 4096).unwrap();
        f.write_all_at(b"far away", 6 << 20).unwrap();
        // Data, but zeros: left a hole.
        f.write_all_at(&[0u8; 64 << 10], 2 << 20).unwrap();
        drop(f);
        let ram = SealedRam::load(&p).unwrap();
        assert_eq!(ram.len(), 8 << 20);
        // Only the two pages with something in them were copied.
        assert_eq!(ram.data_bytes(), 2 * 4096);
        let copy = File::from(ram.fd.try_clone().unwrap());
        let mut b = [0u8; 8];
        copy.read_exact_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"page one");
        copy.read_exact_at(&mut b, 6 << 20).unwrap();
        assert_eq!(&b, b"far away");
        copy.read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(b, [0; 8]);
        // What a VMM's discard would do: refused, the data stays.
        let punch = nix::fcntl::fallocate(
            &copy,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            4096,
            4096,
        );
        assert_eq!(punch, Err(nix::errno::Errno::EPERM));
        assert!(copy.write_all_at(b"x", 0).is_err(), "writes are sealed");
        copy.read_exact_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"page one");
    }
}
