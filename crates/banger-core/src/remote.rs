//! What a client on another host sends instead of a path, and what it
//! needs that a local client reads from disk: an upload (the request body,
//! stored in scratch, then imported as a tarball or kernel file), and a
//! VM's ssh access material (the managed key and the VM's pinned
//! known_hosts lines).
//!
//! An upload lives in a [`Upload`] scratch directory under `tmp/`, removed
//! when dropped (and by the next daemon's start if this one dies), so a
//! body that breaks off or an import that fails leaves nothing.

use std::path::{Path, PathBuf};

use banger_api::{
    ImageRecord, ImageSource, ImageUploadQuery, KernelImportRequest, KernelRecord,
    KernelUploadQuery, VmSshAccess,
};

use crate::error::{CoreError, CoreResult, internal};
use crate::events::EventSink;
use crate::scratch::Scratch;
use crate::services::Services;

/// A request body being received, in a scratch directory of its own.
#[derive(Debug)]
pub struct Upload {
    scratch: Scratch,
}

impl Upload {
    /// Where the body goes.
    pub fn file(&self) -> PathBuf {
        self.scratch.path().join("body")
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }
}

/// The entries a kernel upload may hold.
const KERNEL: &str = "kernel";
const INITRD: &str = "initrd";

impl Services {
    /// A new, empty upload.
    pub fn upload(&self) -> CoreResult<Upload> {
        let scratch = Scratch::new(&self.layout, "upload")
            .map_err(|e| internal("create a scratch directory for the upload", &e))?;
        Ok(Upload { scratch })
    }

    /// Build image `q.name` from an uploaded root filesystem (a tar, or a
    /// compressed one). The upload is gone afterwards, whatever happens.
    pub fn import_uploaded_image(
        &self,
        upload: Upload,
        q: &ImageUploadQuery,
        events: EventSink<'_>,
    ) -> CoreResult<ImageRecord> {
        let path = q.source.clone().unwrap_or_else(|| "upload".into());
        let source = if q.directory {
            ImageSource::Directory { path }
        } else {
            ImageSource::Tarball { path }
        };
        self.images
            .import_from(&upload.file(), source, &q.name, events)
    }

    /// Import an uploaded kernel: a tar of `kernel` and optionally
    /// `initrd`, regular files and nothing else.
    pub fn import_uploaded_kernel(
        &self,
        upload: Upload,
        q: &KernelUploadQuery,
        events: EventSink<'_>,
    ) -> CoreResult<KernelRecord> {
        let files = upload.dir().join("files");
        unpack_kernel_upload(&upload.file(), &files)?;
        let kernel = files.join(KERNEL);
        if !kernel.exists() {
            return Err(CoreError::invalid(
                "the kernel upload holds no `kernel` entry",
            ));
        }
        let initrd = files.join(INITRD);
        let req = KernelImportRequest {
            path: kernel.display().to_string(),
            initrd: initrd.exists().then(|| initrd.display().to_string()),
            name: q.name.clone(),
            deb: q.deb,
        };
        self.kernels.import(&req, events)
    }

    /// What OpenSSH on another host needs to log in to VM `reference` as
    /// root, checking its pinned host key.
    pub fn vm_ssh_access(&self, reference: &str) -> CoreResult<VmSshAccess> {
        let vm = self.vms.get(reference)?;
        let alias = crate::paths::ssh_host_alias(&vm.id);
        let key_path = self.layout.ssh_key();
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    CoreError::conflict(format!(
                        "no banger ssh key at {}: vm {} was made by a banger without one",
                        p.display(),
                        vm.name
                    ))
                } else {
                    internal(&format!("cannot read {}", p.display()), &e)
                }
            })
        };
        let private_key = read(&key_path)?;
        let public_key = read(&key_path.with_extension("pub"))?.trim().to_string();
        let known_hosts = crate::ssh::known_host_lines(&self.layout, &alias)?;
        if known_hosts.is_empty() {
            return Err(CoreError::conflict(format!(
                "vm {} has no host key in {}; it cannot be reached with its key pinned",
                vm.name,
                self.layout.known_hosts().display()
            )));
        }
        Ok(VmSshAccess {
            user: "root".into(),
            host_key_alias: alias,
            known_hosts,
            private_key,
            public_key,
        })
    }
}

/// Unpack the `kernel`/`initrd` regular files of the tar at `tarball` into
/// `dir`; any other entry is refused, so nothing the client names can land
/// elsewhere.
fn unpack_kernel_upload(tarball: &Path, dir: &Path) -> CoreResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| internal(&format!("create {}", dir.display()), &e))?;
    let file = std::fs::File::open(tarball)
        .map_err(|e| internal(&format!("open {}", tarball.display()), &e))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(file));
    let bad =
        |e: std::io::Error| CoreError::invalid(format!("the kernel upload is not a tar: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let mut e = entry.map_err(bad)?;
        let path = e.path().map_err(bad)?.into_owned();
        let name = path
            .to_str()
            .map(|n| n.trim_start_matches("./"))
            .unwrap_or_default()
            .to_string();
        if name != KERNEL && name != INITRD {
            return Err(CoreError::invalid(format!(
                "the kernel upload holds {}: only `kernel` and `initrd` are accepted",
                path.display()
            )));
        }
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(CoreError::invalid(format!(
                "the kernel upload's {name} is not a regular file"
            )));
        }
        let dest = dir.join(&name);
        let mut out = std::fs::File::create(&dest)
            .map_err(|e| internal(&format!("create {}", dest.display()), &e))?;
        std::io::copy(&mut e, &mut out)
            .map_err(|e| internal(&format!("write {}", dest.display()), &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(if *kind == tar::EntryType::Regular {
                3
            } else {
                0
            });
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/shadow").unwrap();
            }
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"abc"
            } else {
                b""
            };
            // Raw name bytes: the tar crate itself refuses to write `..`,
            // a hostile client would not.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn kernel_uploads_hold_only_kernel_and_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("body");
        std::fs::write(
            &t,
            tar_of(&[
                ("kernel", tar::EntryType::Regular),
                ("./initrd", tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        unpack_kernel_upload(&t, &dir.path().join("ok")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ok/kernel")).unwrap(), b"abc");
        assert!(dir.path().join("ok/initrd").exists());
        for bad in [
            tar_of(&[("../kernel", tar::EntryType::Regular)]),
            tar_of(&[("etc/passwd", tar::EntryType::Regular)]),
            tar_of(&[("kernel", tar::EntryType::Symlink)]),
        ] {
            std::fs::write(&t, bad).unwrap();
            let out = dir.path().join("bad");
            let e = unpack_kernel_upload(&t, &out).unwrap_err();
            assert!(matches!(e, CoreError::InvalidArgument(_)), "{e}");
            assert!(!out.join("kernel").exists());
        }
    }
}
