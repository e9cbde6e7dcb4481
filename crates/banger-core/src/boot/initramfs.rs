//! The banger initramfs of a kernel: built once per kernel and agent
//! (the agent must be a static ELF: it is `/init` with no libc), cached
//! beside the kernel, and put after the kernel's own initrd when it was
//! imported with one.

use std::path::{Path, PathBuf};

use banger_api::KernelRecord;

use super::service::BootService;
use crate::error::{CoreError, CoreResult, chain, internal, is_no_space};

/// True when the ELF at `path` asks for a program interpreter, i.e. is
/// dynamically linked and cannot run as /init of an initramfs with no libc.
fn is_dynamic_elf(path: &Path) -> std::io::Result<bool> {
    let data = std::fs::read(path)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a 64-bit ELF");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return Err(bad());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = usize::try_from(u64::from_le_bytes(
        data[32..40].try_into().map_err(|_| bad())?,
    ))
    .map_err(|_| bad())?;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(h) = data.get(at..at + 4) else {
            return Err(bad());
        };
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(h.try_into().map_err(|_| bad())?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

impl BootService {
    /// The banger initramfs for this kernel and agent, built once and cached
    /// beside the kernel.
    pub(super) fn initramfs_for(&self, kernel: &KernelRecord) -> CoreResult<PathBuf> {
        let meta = std::fs::metadata(&self.agent_bin).map_err(|e| {
            CoreError::internal(format!(
                    "guest agent {} unusable: {e}; install the static banger-agent or set BANGER_AGENT_BIN",
                    self.agent_bin.display()
                ),
            )
        })?;
        let agent_id = format!(
            "{}:{}:{:?}",
            self.agent_bin.display(),
            meta.len(),
            meta.modified().ok()
        );
        let memo_key = (kernel.id.clone(), agent_id);
        if let Some(p) = self
            .initramfs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&memo_key)
            .filter(|p| p.exists())
        {
            return Ok(p.clone());
        }
        match is_dynamic_elf(&self.agent_bin) {
            Ok(false) => {}
            Ok(true) => {
                return Err(CoreError::internal(format!(
                    "guest agent {} is dynamically linked and cannot run in the initramfs; build it with scripts/build-agent.sh",
                    self.agent_bin.display()
                )));
            }
            Err(e) => {
                return Err(internal(
                    &format!("guest agent {}", self.agent_bin.display()),
                    &e,
                ));
            }
        }
        // One build at a time: VMs started together share the result
        // instead of each building the same archive.
        let _building = self
            .initramfs_build
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let modules = kernel.modules_path.as_deref().map(Path::new);
        let wanted = banger_initramfs::DEFAULT_MODULES;
        let dir = self.layout.kernel_dir(&kernel.id);
        let initramfs_err = |e: banger_initramfs::InitramfsError| {
            if is_no_space(&e) {
                CoreError::no_space(dir.display())
            } else {
                CoreError::internal(format!("initramfs: {}", chain(&e)))
            }
        };
        let key =
            banger_initramfs::cache_key(&self.agent_bin, modules, wanted).map_err(initramfs_err)?;
        let out = dir.join(format!("initramfs-{}.cpio", &key[..16]));
        if !out.exists() {
            banger_initramfs::build(&self.agent_bin, modules, wanted, &out)
                .map_err(initramfs_err)?;
        }
        let out = match &kernel.initrd_path {
            None => out,
            Some(initrd) => {
                let combined = dir.join(format!("initramfs-{}-initrd.cpio", &key[..16]));
                if !combined.exists() {
                    with_user_initrd(Path::new(initrd), &out, &combined).map_err(|e| {
                        if is_no_space(&e) {
                            CoreError::no_space(dir.display())
                        } else {
                            internal(&format!("add the initrd {initrd}"), &e)
                        }
                    })?;
                }
                combined
            }
        };
        self.initramfs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(memo_key, out.clone());
        Ok(out)
    }
}

/// The kernel's own initrd (`kernel import --initrd`) followed by the
/// banger initramfs, written atomically to `out`. The kernel unpacks every
/// cpio archive of a concatenation, compressed or not, in order, into one
/// rootfs; later entries replace earlier ones. So banger's `/init` (the
/// agent) and its modules win, the user's other files (firmware, extra
/// modules, tools) are there before the root switch, and an early microcode
/// archive stays first, where the kernel looks for it. Each archive must
/// start 4-byte aligned; zeros pad between them.
fn with_user_initrd(initrd: &Path, banger: &Path, out: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = out.with_extension("tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        let mut user = std::fs::File::open(initrd)?;
        let n = std::io::copy(&mut user, &mut f)?;
        let pad = (4 - n % 4) % 4;
        f.write_all(&[0u8; 3][..usize::try_from(pad).unwrap_or(0)])?;
        std::io::copy(&mut std::fs::File::open(banger)?, &mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use banger_store::Store;
    use banger_vmm::{AnyDriver, qemu};

    use super::*;
    use crate::{Config, Layout, now_rfc3339};

    #[test]
    fn static_and_dynamic_elves() {
        assert!(is_dynamic_elf(Path::new("/bin/sh")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"#!/bin/sh\n").unwrap();
        assert!(is_dynamic_elf(&junk).is_err());
    }

    /// The smallest static ELF `is_dynamic_elf` accepts: no program headers.
    fn static_elf(path: &Path) {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        std::fs::write(path, h).unwrap();
    }

    #[test]
    fn an_imported_initrd_precedes_the_banger_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Arc::new(Layout::new(dir.path().join("data")));
        layout.ensure().unwrap();
        let store = Arc::new(Store::open(&layout.database()).unwrap());
        let agent = dir.path().join("agent");
        static_elf(&agent);
        let boot = BootService::new(
            Arc::new(Config::default()),
            layout.clone(),
            store,
            AnyDriver::Qemu(qemu::QemuDriver::default()),
            agent,
            Arc::default(),
        );
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, b"USERINITRD").unwrap();
        let mut kernel = KernelRecord {
            id: "kkkkkkkkkkkkkkkk".into(),
            name: "k".into(),
            release: None,
            kernel_path: "/nonexistent/vmlinuz".into(),
            vmlinux_path: None,
            config_path: None,
            initrd_path: None,
            modules_path: None,
            modules_disk: None,
            vmm_support: Vec::new(),
            is_default: true,
            created_at: now_rfc3339(),
        };
        std::fs::create_dir_all(layout.kernel_dir(&kernel.id)).unwrap();
        let ours = std::fs::read(boot.initramfs_for(&kernel).unwrap()).unwrap();
        assert!(ours.starts_with(b"070701"), "a newc archive");

        // Another kernel, the same but for its initrd (a record's initrd
        // never changes, so the memo is per kernel).
        kernel.id = "jjjjjjjjjjjjjjjj".into();
        kernel.initrd_path = Some(initrd.display().to_string());
        std::fs::create_dir_all(layout.kernel_dir(&kernel.id)).unwrap();
        let path = boot.initramfs_for(&kernel).unwrap();
        let both = std::fs::read(&path).unwrap();
        // The user's bytes, zeros to a 4-byte boundary, then ours whole.
        assert_eq!(&both[..10], b"USERINITRD");
        assert_eq!(&both[10..12], &[0, 0]);
        assert_eq!(&both[12..], &ours[..]);
        // Cached: the second start reuses the file, no .tmp is left.
        assert_eq!(boot.initramfs_for(&kernel).unwrap(), path);
        let leftovers: Vec<_> = std::fs::read_dir(layout.kernel_dir(&kernel.id))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
