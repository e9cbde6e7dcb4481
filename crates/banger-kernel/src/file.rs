//! Importing a kernel image file (and an optional initrd) as given.

use std::fs;
use std::path::{Path, PathBuf};

use crate::derive::describe;
use crate::probe::{KernelFormat, probe};
use crate::staging::Staging;
use crate::{ImportedKernel, KernelError};

/// Validates `kernel` as a bzImage or ELF vmlinux and copies it, with
/// `initrd` if given, into the new directory `dest_dir` (`vmlinuz` or
/// `vmlinux`, and `initrd`). `dest_dir` must not exist; on error it is not
/// created.
pub fn import_file(
    kernel: &Path,
    initrd: Option<&Path>,
    dest_dir: &Path,
) -> Result<ImportedKernel, KernelError> {
    let info = probe(kernel)?;
    let staging = Staging::new(dest_dir)?;

    let kernel_name = match info.format {
        KernelFormat::BzImage => "vmlinuz",
        KernelFormat::Elf => "vmlinux",
    };
    copy(kernel, &staging.path().join(kernel_name))?;
    let initrd_rel = match initrd {
        Some(src) => {
            let meta = fs::metadata(src).map_err(KernelError::io("stat", src))?;
            if !meta.is_file() || meta.len() == 0 {
                return Err(KernelError::NotAKernel {
                    path: src.to_path_buf(),
                    reason: "initrd is empty or not a regular file".to_string(),
                });
            }
            let head = read_head(src, 1088)?;
            if initrd_format(&head).is_none() {
                return Err(KernelError::NotAnInitrd {
                    path: src.to_path_buf(),
                    reason: "neither a cpio archive, plain or compressed, nor a ramdisk filesystem Linux can identify".to_string(),
                });
            }
            copy(src, &staging.path().join("initrd"))?;
            Some(PathBuf::from("initrd"))
        }
        None => None,
    };

    let imported = describe(
        &staging,
        info.format,
        initrd_rel.as_deref(),
        None,
        info.release,
    )?;
    staging.finish()?;
    Ok(imported)
}

/// What Linux itself accepts as an initrd, by the magic it looks for: an
/// initramfs is a cpio archive (newc, crc or old ASCII; early microcode is
/// one too), plain or compressed with a codec the kernel's
/// `decompress_method` knows; a legacy initrd is a ramdisk filesystem
/// `identify_ramdisk_image` knows. Anything else is not one.
pub fn initrd_format(head: &[u8]) -> Option<&'static str> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"070701", "cpio"),
        (b"070702", "cpio"),
        (b"070707", "cpio"),
        (&[0x1f, 0x8b], "gzip"),
        (&[0x1f, 0x9e], "gzip"),
        (b"BZh", "bzip2"),
        (&[0x5d, 0x00, 0x00], "lzma"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x89, b'L', b'Z', b'O'], "lzo"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"-rom1fs-", "romfs"),
        (&[0x45, 0x3d, 0xcd, 0x28], "cramfs"),
        (b"hsqs", "squashfs"),
    ];
    if let Some((_, name)) = MAGICS.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(name);
    }
    // ext2/3/4: the superblock's magic 0xEF53 at byte 1024 + 56.
    (head.get(1080..1082) == Some(&[0x53, 0xef][..])).then_some("ext2")
}

fn read_head(path: &Path, len: u64) -> Result<Vec<u8>, KernelError> {
    use std::io::Read;
    let mut head = Vec::new();
    crate::probe::open_regular(path)?
        .take(len)
        .read_to_end(&mut head)
        .map_err(KernelError::io("read", path))?;
    Ok(head)
}

fn copy(from: &Path, to: &Path) -> Result<(), KernelError> {
    // Open the source first so a bad input is reported as such; what fails
    // after that is most likely the write (a full disk), named by `to`.
    let mut src = fs::File::open(from).map_err(KernelError::io("open", from))?;
    let mut dst = fs::File::create(to).map_err(KernelError::io("create", to))?;
    std::io::copy(&mut src, &mut dst).map_err(KernelError::io("write", to))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::fake_bzimage;

    #[test]
    fn imports_bzimage_and_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bzImage");
        fs::write(&src, fake_bzimage("6.6.1-test #1")).unwrap();
        let initrd = dir.path().join("initrd.img");
        fs::write(&initrd, b"070701fakecpio").unwrap();
        let dest = dir.path().join("kernels/k1");

        let k = import_file(&src, Some(&initrd), &dest).unwrap();
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.release.as_deref(), Some("6.6.1-test"));
        assert_eq!(k.kernel_path, dest.join("vmlinuz"));
        assert_eq!(k.initrd_path, Some(dest.join("initrd")));
        assert_eq!(fs::read(&k.kernel_path).unwrap(), fs::read(&src).unwrap());
        assert_eq!(fs::read(dest.join("initrd")).unwrap(), b"070701fakecpio");
        // Only dest remains beside the staging location.
        let siblings: Vec<_> = fs::read_dir(dir.path().join("kernels"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(siblings, vec!["k1"]);
    }

    #[test]
    fn failures_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let kernels = dir.path().join("kernels");
        fs::create_dir(&kernels).unwrap();
        let src = dir.path().join("bzImage");
        fs::write(&src, fake_bzimage("6.6.1")).unwrap();
        let garbage = dir.path().join("garbage");
        fs::write(&garbage, vec![0xA5; 4096]).unwrap();
        let dest = kernels.join("k1");

        let err = import_file(&garbage, None, &dest).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel { .. }), "{err:?}");
        // An initrd the kernel could not identify is refused.
        let err = import_file(&src, Some(&garbage), &dest).unwrap_err();
        assert!(
            matches!(&err, KernelError::NotAnInitrd { path, .. } if path == &garbage),
            "{err:?}"
        );
        // The initrd fails after the kernel was already copied.
        let err = import_file(&src, Some(&dir.path().join("missing")), &dest).unwrap_err();
        assert!(
            matches!(&err, KernelError::Io { op: "stat", path, .. } if path.ends_with("missing")),
            "{err:?}"
        );
        let err = import_file(&dir.path().join("nope"), None, &dest).unwrap_err();
        assert!(matches!(err, KernelError::Io { op: "open", .. }), "{err:?}");
        assert_eq!(fs::read_dir(&kernels).unwrap().count(), 0);
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let dest = dir.path().join("k");
        for p in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let err = import_file(p, None, &dest).unwrap_err();
            assert!(
                matches!(err, KernelError::NotAFile { .. }),
                "{p:?}: {err:?}"
            );
            let err = crate::import_deb(p, &dest).unwrap_err();
            assert!(
                matches!(err, KernelError::NotAFile { .. }),
                "{p:?}: {err:?}"
            );
        }
        assert!(!dest.exists());
    }

    #[test]
    fn initrd_formats_by_magic() {
        assert_eq!(initrd_format(b"070701000000"), Some("cpio"));
        assert_eq!(initrd_format(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(initrd_format(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some("zstd"));
        let mut ext2 = vec![0u8; 2048];
        ext2[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(initrd_format(&ext2), Some("ext2"));
        assert_eq!(initrd_format(&[0x5a; 4096]), None);
        assert_eq!(initrd_format(b"07070"), None);
    }

    #[test]
    fn existing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("bzImage");
        fs::write(&src, fake_bzimage("6.6.1")).unwrap();
        let err = import_file(&src, None, dir.path()).unwrap_err();
        assert!(
            matches!(err, KernelError::DestinationExists { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn elf_is_imported_as_vmlinux() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("vmlinux");
        fs::write(&src, b"\x7fELF\x02\x01\x01\0Linux version 6.1.0-x (b) #1\0").unwrap();
        let k = import_file(&src, None, &dir.path().join("k")).unwrap();
        assert_eq!(k.format, KernelFormat::Elf);
        assert_eq!(k.kernel_path, dir.path().join("k/vmlinux"));
        assert_eq!(k.release.as_deref(), Some("6.1.0-x"));
        assert_eq!(k.initrd_path, None);
    }
}
