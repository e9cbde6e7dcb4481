//! The kernel registry: import (a kernel file or a Debian `linux-image-*`
//! package), list, show, remove, and which one new VMs boot by default.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::{Bootable, KernelImportRequest, KernelRecord, VmmSupport, validate};
use banger_kernel::compat::Verdict;
use banger_store::Store;
use banger_vmm::VmmKind;

use crate::error::{CoreError, CoreResult, ErrorKind, classify, store_err};
use crate::events::{EventSink, stage};
use crate::scratch::{remove_any, remove_object, remove_unknown};
use crate::{Layout, alloc, now_rfc3339, resolve};

/// The read-only ext4 of a kernel's module tree, beside the kernel.
const MODULES_DISK: &str = "modules.ext4";

#[derive(Debug)]
pub struct KernelService {
    layout: Arc<Layout>,
    store: Arc<Store>,
    /// Serialises imports and removals so name checks and default-kernel
    /// changes see a consistent registry.
    lock: Mutex<()>,
}

impl KernelService {
    pub fn new(layout: Arc<Layout>, store: Arc<Store>) -> Self {
        Self {
            layout,
            store,
            lock: Mutex::new(()),
        }
    }

    pub fn list(&self) -> CoreResult<Vec<KernelRecord>> {
        self.store.list_kernels().map_err(store_err)
    }

    pub fn get(&self, reference: &str) -> CoreResult<KernelRecord> {
        let candidates = self
            .store
            .find_kernels_by_prefix(reference)
            .map_err(store_err)?;
        resolve::pick("kernel", reference, candidates)
    }

    /// The kernel new VMs boot when none is named.
    pub fn default_kernel(&self) -> CoreResult<KernelRecord> {
        self.store.default_kernel().map_err(store_err)?.ok_or_else(|| {
            CoreError::not_found(
                "no default kernel; import one with `banger kernel import` or pick one with `banger kernel default`",
            )
        })
    }

    pub fn import(
        &self,
        req: &KernelImportRequest,
        events: EventSink<'_>,
    ) -> CoreResult<KernelRecord> {
        let path = Path::new(&req.path);
        if !path.is_absolute() {
            return Err(CoreError::invalid(format!(
                "kernel path {:?} must be absolute",
                req.path
            )));
        }
        if let Some(name) = &req.name {
            validate::artifact_name(name, "kernel name").map_err(CoreError::invalid)?;
        }
        if req.deb && req.initrd.is_some() {
            return Err(CoreError::invalid(
                "--initrd does not apply to --deb imports",
            ));
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = &req.name {
            self.ensure_name_free(name)?;
        }
        let id = alloc::new_id();
        let dest = self.layout.kernel_dir(&id);
        stage(
            events,
            "import_kernel",
            format!("importing {}", path.display()),
        );
        let initrd = req.initrd.as_deref().map(Path::new);
        let inputs: Vec<&Path> = std::iter::once(path).chain(initrd).collect();
        let imported = if req.deb {
            banger_kernel::import_deb(path, &dest)
        } else {
            banger_kernel::import_file(path, initrd, &dest)
        }
        .map_err(|e| kernel_error(&e, &inputs, &self.layout.kernels_dir()))?;
        let modules_disk = match &imported.modules_path {
            Some(dir) => {
                stage(events, "modules_disk", "building the modules disk");
                let out = dest.join(MODULES_DISK);
                let built = banger_kernel::index_modules(dir)
                    .map_err(|e| kernel_error(&e, &inputs, &self.layout.kernels_dir()))
                    .and_then(|indexed| {
                        if !indexed {
                            events(banger_api::Event::Message {
                                text: "depmod (kmod) is not installed: modprobe in guests will not find modules".into(),
                            });
                        }
                        build_modules_disk(dir, &out)
                    });
                if let Err(e) = built {
                    remove_any(&dest);
                    return Err(e);
                }
                Some(out.display().to_string())
            }
            None => None,
        };

        let name = match &req.name {
            Some(n) => n.clone(),
            None => self.derived_name(imported.release.as_deref(), path)?,
        };
        // The first kernel becomes the default; the store clears any other
        // default in the same transaction.
        let is_default = self.store.default_kernel().map_err(store_err)?.is_none();
        let record = KernelRecord {
            id: id.clone(),
            name,
            release: imported.release.clone(),
            kernel_path: imported.kernel_path.display().to_string(),
            vmlinux_path: imported
                .vmlinux_path
                .as_ref()
                .map(|p| p.display().to_string()),
            config_path: imported
                .config_path
                .as_ref()
                .map(|p| p.display().to_string()),
            modules_disk,
            vmm_support: imported.support.iter().map(support_to_api).collect(),
            initrd_path: imported
                .initrd_path
                .as_ref()
                .map(|p| p.display().to_string()),
            modules_path: imported
                .modules_path
                .as_ref()
                .map(|p| p.display().to_string()),
            is_default,
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_kernel(&record) {
            remove_any(&dest);
            return Err(store_err(e));
        }
        self.fetch(&id)
    }

    fn fetch(&self, id: &str) -> CoreResult<KernelRecord> {
        self.store
            .get_kernel(id)
            .map_err(store_err)?
            .ok_or_else(|| CoreError::not_found(format!("kernel {id} vanished")))
    }

    /// A name from the kernel's release (`6.1.0-28-cloud-amd64`) or its file
    /// name, made unique with a numeric suffix.
    fn derived_name(&self, release: Option<&str>, path: &Path) -> CoreResult<String> {
        let raw = release.map(str::to_string).unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel".into())
        });
        let mut base: String = raw
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        base = base
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        base.truncate(55);
        if base.is_empty() {
            base = "kernel".into();
        }
        let taken: HashSet<String> = self.list()?.into_iter().map(|k| k.name).collect();
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        Ok(name)
    }

    fn ensure_name_free(&self, name: &str) -> CoreResult<()> {
        if self.list()?.iter().any(|k| k.name == name) {
            return Err(CoreError::already_exists(format!(
                "a kernel named {name:?} exists already"
            )));
        }
        Ok(())
    }

    pub fn set_default(&self, reference: &str) -> CoreResult<KernelRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = self.get(reference)?;
        self.store.set_default_kernel(&k.id).map_err(store_err)?;
        self.fetch(&k.id)
    }

    /// Refused while a VM boots this kernel; the files go after the record.
    pub fn remove(&self, reference: &str) -> CoreResult<KernelRecord> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let k = self.get(reference)?;
        let users = self.store.vms_using_kernel(&k.id).map_err(store_err)?;
        if !users.is_empty() {
            return Err(CoreError::conflict(format!(
                "kernel {} is used by vm {}; remove those VMs first",
                k.name,
                users.join(", ")
            )));
        }
        remove_object(
            &self.layout,
            &self.layout.kernel_dir(&k.id),
            "kernel",
            || self.store.delete_kernel(&k.id),
        )?;
        // Its boot templates (`boot::template`) go with it.
        let _ = std::fs::remove_dir_all(self.layout.data_dir.join("templates").join(&k.id));
        Ok(k)
    }

    /// Refuses a kernel that `vmm` is known not to boot, with the reasons.
    /// Kernels judged unknown, or never judged, are let through: the boot
    /// itself will tell.
    pub fn ensure_bootable(kernel: &KernelRecord, vmm: VmmKind) -> CoreResult<()> {
        match kernel.support_for(vmm.as_str()) {
            Some(s) if s.bootable == Bootable::No => Err(CoreError::invalid(format!(
                "kernel {} cannot boot under {vmm}: {}",
                kernel.name,
                s.reasons.join("; ")
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn remove_orphans(&self) {
        if let Ok(list) = self.store.list_kernels() {
            let known: HashSet<String> = list.into_iter().map(|k| k.id).collect();
            remove_unknown(&self.layout.kernels_dir(), &known);
        }
    }
}

/// What the user handed in (not a kernel, a bad package, an unreadable
/// file) versus what broke on our side (a write under the data directory,
/// a tool that would not run), and a full data directory.
///
/// An I/O failure is the user's only when it is about one of `inputs`, the
/// paths the request named: everything else the import touches (staging,
/// depmod's scratch tree, the tools) is ours.
fn kernel_error(e: &banger_kernel::KernelError, inputs: &[&Path], kernels_dir: &Path) -> CoreError {
    use banger_kernel::KernelError as K;
    let kind = match e {
        K::NotAKernel { .. }
        | K::NotAKernelPackage { .. }
        | K::BadPackage { .. }
        | K::UnsafeEntry { .. }
        | K::ReleaseMismatch { .. }
        | K::BadModule { .. }
        | K::NotAFile { .. }
        | K::NotAnInitrd { .. } => ErrorKind::InvalidArgument,
        K::Io { path, .. } if inputs.contains(&path.as_path()) => ErrorKind::InvalidArgument,
        K::Io { .. } | K::UnknownModule { .. } | K::DestinationExists { .. } => ErrorKind::Internal,
    };
    classify(e, kind, kernels_dir)
}

fn support_to_api(s: &banger_kernel::compat::VmmSupport) -> VmmSupport {
    let (bootable, reasons) = match &s.verdict {
        Verdict::Yes => (Bootable::Yes, Vec::new()),
        Verdict::No(r) => (Bootable::No, r.clone()),
        Verdict::Unknown(r) => (Bootable::Unknown, vec![r.clone()]),
    };
    VmmSupport {
        vmm: s.vmm.as_str().to_string(),
        bootable,
        reasons,
    }
}

/// `modules/<release>` as a read-only ext4 every VM of the kernel gets, so
/// the guest sees the whole module tree without the initramfs carrying it.
fn build_modules_disk(dir: &Path, out: &Path) -> CoreResult<()> {
    let (bytes, inodes) = tree_usage(dir)
        .map_err(|e| crate::error::internal(&format!("measure {}", dir.display()), &e))?;
    // Block rounding, directories and metadata: a quarter more plus a
    // fixed margin fits module trees, which are few large files.
    let mut size = (bytes + bytes / 4 + (16 << 20)).next_multiple_of(1 << 20);
    let opts = banger_disk::MkfsOptions {
        label: Some("banger-modules".into()),
        inodes: Some(inodes * 2 + 1024),
        journal: false,
    };
    let mut attempts = 0;
    loop {
        match banger_disk::mkfs_from_dir(dir, out, size, &opts) {
            Ok(()) => return Ok(()),
            Err(banger_disk::DiskError::NoSpace { .. }) if attempts < 3 => {
                attempts += 1;
                size = size / 2 * 3;
            }
            Err(e) => {
                let dir = out.parent().unwrap_or(out);
                return Err(classify(&e, ErrorKind::Internal, dir));
            }
        }
    }
}

/// Bytes (rounded up to 4 KiB per file) and entries below `dir`.
fn tree_usage(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut inodes) = (0u64, 1u64);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        inodes += 1;
        bytes += meta.len().next_multiple_of(4096);
        if meta.is_dir() {
            let (b, i) = tree_usage(&entry.path())?;
            bytes += b;
            inodes += i;
        }
    }
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use banger_kernel::KernelError;

    use super::*;

    fn io_err(path: &str, kind: io::ErrorKind) -> KernelError {
        KernelError::Io {
            op: "write",
            path: PathBuf::from(path),
            source: io::Error::from(kind),
        }
    }

    #[test]
    fn kernel_import_failures_carry_their_code() {
        let kernels = Path::new("/d/kernels");
        let user = Path::new("/home/u/vmlinuz");
        let code = |e: KernelError| kernel_error(&e, &[user], kernels).kind();
        // The user's input.
        assert_eq!(
            code(io_err("/home/u/vmlinuz", io::ErrorKind::NotFound)),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            code(KernelError::NotAKernel {
                path: "/x".into(),
                reason: "no magic".into()
            }),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            code(KernelError::BadPackage {
                path: "/x.deb".into(),
                reason: "not ar".into()
            }),
            ErrorKind::InvalidArgument
        );
        // Ours.
        assert_eq!(
            code(io_err(
                "/d/kernels/.banger-import-x/vmlinuz",
                io::ErrorKind::PermissionDenied
            )),
            ErrorKind::Internal
        );
        // A tool that would not run is ours too, wherever it lives.
        assert_eq!(
            code(KernelError::Io {
                op: "run",
                path: "/usr/sbin/depmod".into(),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            }),
            ErrorKind::Internal
        );
        // A full disk, whichever file hit it, and a quota.
        for kind in [io::ErrorKind::StorageFull, io::ErrorKind::QuotaExceeded] {
            let e = kernel_error(
                &io_err("/d/kernels/.banger-import-x/m.ko", kind),
                &[user],
                kernels,
            );
            assert_eq!(e, CoreError::no_space("/d/kernels"));
            assert_eq!(e.to_string(), "no space left on /d/kernels");
            assert_eq!(banger_api::ApiError::from(e).http_status(), 507);
        }
        let enospc = KernelError::Io {
            op: "write",
            path: "/d/kernels/x".into(),
            source: io::Error::from_raw_os_error(28),
        };
        assert_eq!(code(enospc), ErrorKind::NoSpace);
    }

    #[test]
    fn only_a_known_no_is_refused() {
        let verdict = |vmm: &str, bootable, reasons: &[&str]| VmmSupport {
            vmm: vmm.into(),
            bootable,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
        };
        let k = KernelRecord {
            id: "k".into(),
            name: "cloud".into(),
            release: None,
            kernel_path: "/k/vmlinuz".into(),
            vmlinux_path: None,
            config_path: None,
            initrd_path: None,
            modules_path: None,
            modules_disk: None,
            vmm_support: vec![
                verdict("firecracker", Bootable::No, &["a", "b"]),
                verdict("qemu", Bootable::Unknown, &["no config"]),
            ],
            is_default: false,
            created_at: String::new(),
        };
        let err = KernelService::ensure_bootable(&k, VmmKind::Firecracker).unwrap_err();
        assert_eq!(
            err,
            CoreError::invalid("kernel cloud cannot boot under firecracker: a; b")
        );
        KernelService::ensure_bootable(&k, VmmKind::Qemu).unwrap();
    }
}
