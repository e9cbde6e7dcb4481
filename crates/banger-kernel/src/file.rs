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
            // An initrd has no reliable magic (cpio, or compressed cpio with
            // several codecs); only refuse what cannot be one.
            let meta = fs::metadata(src).map_err(KernelError::io("stat", src))?;
            if !meta.is_file() || meta.len() == 0 {
                return Err(KernelError::NotAKernel {
                    path: src.to_path_buf(),
                    reason: "initrd is empty or not a regular file".to_string(),
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

fn copy(from: &Path, to: &Path) -> Result<(), KernelError> {
    fs::copy(from, to).map_err(KernelError::io("copy", from))?;
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
