//! `vm rebase`: move a stopped VM onto another image (a newer pull of the
//! same reference, a committed image), keeping what makes it that VM: its
//! work disk (`/root`), id, name, address, MAC and CID (all derived from
//! the record, which stays), spec and SSH host key. The overlay disk is
//! built anew against the new base, since an overlay is meaningless over
//! any base but the one it was written against: changes the VM made
//! outside `/root` are dropped, as a container's are when it is recreated
//! from a newer image. Rebasing onto the same image resets the overlay.
//!
//! The new overlay is built in scratch; the old one is kept as a hard link
//! there until the record names the new image, so a failure at any step
//! puts the VM back as it was, and a crash leaves an overlay disk at the
//! VM's path at every instant (after the swap and before the record: a
//! fresh overlay over the old image, a whole VM).

use std::path::Path;

use banger_api::{VmRebaseRequest, VmRecord, VmState};

use super::{VmService, build_overlay};
use crate::Services;
use crate::error::{CoreError, CoreResult, internal, store_err};
use crate::events::{EventSink, stage};
use crate::kernels::KernelService;
use crate::scratch::Scratch;
use crate::{guest_files, now_rfc3339};

impl Services {
    /// Rebase `reference` onto `req.image` (see the module doc).
    pub async fn rebase_vm(
        &self,
        reference: &str,
        req: &VmRebaseRequest,
        events: EventSink<'_>,
    ) -> CoreResult<VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        // A VM whose VMM went away on its own is stopped, not running.
        let vm = self.boot.settle(vm).await?;
        if vm.desired_state == VmState::Running {
            return Err(CoreError::conflict(format!(
                "vm {} is running; stop it first (`banger vm stop {}`): a rebase replaces its overlay disk",
                vm.name, vm.name
            )));
        }
        let image = self.images.get(&req.image)?;
        if !Path::new(&image.base_path).is_file() {
            return Err(CoreError::conflict(format!(
                "image {} cannot boot vm {}: its base {} is missing; remove the image and import or pull it again",
                image.name, vm.name, image.base_path
            )));
        }
        let kernel = self.kernels.get(&vm.kernel_id).map_err(|_| {
            CoreError::conflict(format!(
                "vm {} names kernel {}, which no longer exists",
                vm.name, vm.kernel_id
            ))
        })?;
        KernelService::ensure_bootable(&kernel, self.boot.vmm())?;
        stage(
            events,
            "prepare_disks",
            format!("building a fresh overlay for {} on {}", vm.name, image.name),
        );
        tokio::task::block_in_place(|| self.vms.rebase_locked(vm, &image.id))
    }
}

impl VmService {
    /// The disk work of a rebase; the caller holds the VM's lock and has
    /// checked that the VM is stopped and that the image can boot it.
    fn rebase_locked(&self, mut vm: VmRecord, image_id: &str) -> CoreResult<VmRecord> {
        let overlay = Path::new(&vm.overlay_disk);
        // A VM whose overlay holds no key banger wrote (made before host
        // keys were) gets one now, and known_hosts learns it.
        let (host_key, new_key) = match self.host_key_of(&vm) {
            Ok(k) => (k, false),
            Err(e) => {
                tracing::warn!(vm = %vm.name, error = %e, "generating a new host key");
                (crate::ssh::generate(&format!("root@{}", vm.name))?, true)
            }
        };
        let scratch =
            Scratch::new(&self.layout, "rebase").map_err(|e| internal("create scratch", &e))?;
        let fresh = scratch.path().join("overlay.ext4");
        let ip = vm.guest_ip.parse().map_err(|_| {
            CoreError::internal(format!(
                "vm {} has a bad address {:?}",
                vm.name, vm.guest_ip
            ))
        })?;
        build_overlay(
            scratch.path(),
            &fresh,
            &vm.name,
            &self.guest_net(ip),
            &host_key,
            vm.spec.overlay_disk_bytes,
        )
        .map_err(|e| e.into_api(&self.layout.vms_dir()))?;

        let old = scratch.path().join("overlay.old");
        std::fs::hard_link(overlay, &old)
            .map_err(|e| internal(&format!("keep {}", overlay.display()), &e))?;
        std::fs::rename(&fresh, overlay)
            .map_err(|e| internal(&format!("replace {}", overlay.display()), &e))?;
        let previous = std::mem::replace(&mut vm.image_id, image_id.to_string());
        vm.updated_at = now_rfc3339();
        if let Err(e) = self.store.update_vm(&vm) {
            if let Err(undo) = std::fs::rename(&old, overlay) {
                tracing::error!(vm = %vm.name, error = %undo, "cannot put the old overlay back");
            }
            vm.image_id = previous;
            return Err(store_err(e));
        }
        if new_key {
            let alias = crate::paths::ssh_host_alias(&vm.id);
            let names = vec![
                format!("{}.{}", vm.name, self.config.network.domain),
                vm.guest_ip.clone(),
                alias.clone(),
            ];
            let known = crate::ssh::remove_known_host(&self.layout, &alias)
                .and_then(|()| crate::ssh::add_known_host(&self.layout, &names, &host_key.public));
            if let Err(e) = known {
                tracing::warn!(vm = %vm.name, error = %e, "known_hosts not updated");
            }
        }
        Ok(vm)
    }

    /// The VM's SSH host key, read back from its overlay disk, where
    /// create staged it (banger's known_hosts already trusts it).
    fn host_key_of(&self, vm: &VmRecord) -> CoreResult<crate::ssh::KeyPair> {
        let overlay = Path::new(&vm.overlay_disk);
        let path = format!("/{}/{}", guest_files::UPPER, guest_files::SSH_HOST_KEY);
        let read = |p: &str| {
            banger_disk::read_file(overlay, p)
                .map(|b| String::from_utf8_lossy(&b).trim_end().to_string())
        };
        match (read(&path), read(&format!("{path}.pub"))) {
            (Ok(private), Ok(public)) => Ok(crate::ssh::KeyPair {
                private: format!("{private}\n"),
                public,
            }),
            (Err(e), _) | (_, Err(e)) => Err(CoreError::internal(format!(
                "cannot read the SSH host key of vm {}: {}",
                vm.name,
                crate::error::chain(&e)
            ))),
        }
    }
}
