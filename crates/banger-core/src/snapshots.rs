//! Snapshots as objects: `vm snapshot`, `snapshot ls|show|rm`, `vm
//! restore` and `vm fork`.
//!
//! A snapshot directory (`snapshots/<id>/`) holds the VMM's state files
//! (see `banger_vmm::state_files`) and hole-keeping copies of the VM's
//! `overlay.ext4` and `work.ext4`, taken while the guest is frozen. It is
//! written in `tmp/` and renamed into place when whole. The row is inserted
//! first as `saving` (taking the name) and flipped to `ready` after the
//! rename; a daemon killed in between finds a `saving` row at start and
//! removes it with whatever files it names ([`Services::reconcile_snapshots`]).
//!
//! Restoring copies the snapshot's disks again into the VM's directory (a
//! snapshot can be restored any number of times), spawns the VMM on the
//! saved state, and tells the agent who the guest is now
//! (`BootService::tell_identity`): the clock and fresh entropy always,
//! and for a new VM (`--name`, `vm fork`) its hostname, NIC and, through
//! the agent's `copy_in`, its per-VM files (`/etc/hostname`, `/etc/hosts`,
//! resolver, its own SSH host key).
//!
//! A restore is whole once the guest has taken its identity. Until then
//! the VM's directory holds a `restoring` mark (written before its VMM
//! starts): a daemon killed mid-restore leaves it, and the next one
//! ([`Services::reconcile_restores`]) kills that VMM and removes a VM the
//! restore was making (`--name`, `vm fork`), or leaves a VM restored in
//! place stopped, on the snapshot's copies of its disks, to restore again.
//!
//! Under QEMU the agent channel is virtio-serial and the NIC is named by
//! its tap on the command line, so the saved device state carries no
//! vsock CID to clash: a fork gets a new CID in its record like any VM, and
//! a new MAC, which the agent sets on `eth0` (the saved virtio-net state
//! holds the old one). Firecracker's load reopens the disk paths recorded
//! in its state, so there a snapshot can only be restored in place.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use banger_api::{
    ImageRecord, KernelRecord, SnapshotRecord, SnapshotState, StartReport, VmForkRequest, VmRecord,
    VmRestoreRequest, VmSnapshotRequest, VmState, validate,
};

use banger_vmm::VmmKind;

use crate::error::{CoreError, CoreResult, disk_error, internal, store_err};
use crate::events::{EventSink, stage};
use crate::guest_files::{self, GuestNet};
use crate::paths::vm_files;
use crate::resolve::Named;
use crate::scratch::{Scratch, remove_any, remove_object};
use crate::{Services, alloc, now_rfc3339};

pub(crate) mod locks;
mod recover;
use recover::{MARK_IN_PLACE, MARK_NEW, mark_restoring, unmark_restoring};

impl Named for SnapshotRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Bytes a file occupies on disk (holes not counted).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Copies the overlay and work disks `from` → `to` (both directories),
/// keeping holes; returns the bytes the copies occupy.
fn copy_disks(from_overlay: &Path, from_work: &Path, to: &Path) -> CoreResult<u64> {
    let mut total = 0;
    for (src, name) in [
        (from_overlay, vm_files::OVERLAY_DISK),
        (from_work, vm_files::WORK_DISK),
    ] {
        let dst = to.join(name);
        banger_disk::sparse_copy(src, &dst)
            .map_err(|e| disk_error("copy a disk", &e, to.parent().unwrap_or(to)))?;
        total += allocated(&dst);
    }
    Ok(total)
}

impl Services {
    /// A 409 unless `vm` runs here: saving a guest needs its VMM; `why`
    /// says what for.
    fn require_running(&self, vm: &VmRecord, why: &str) -> CoreResult<()> {
        if self.boot.live_handles(vm).is_some() {
            return Ok(());
        }
        Err(CoreError::conflict(format!(
            "vm {} is not running: {why}; start it with `banger vm start {}`",
            vm.name, vm.name
        )))
    }
}

/// The error of a name already taken, in the store's words.
fn taken(kind: &'static str, name: &str) -> CoreError {
    store_err(banger_store::StoreError::Duplicate {
        kind,
        field: "name".into(),
        value: name.into(),
    })
}

impl Services {
    /// Every snapshot, by name.
    pub fn list_snapshots(&self) -> CoreResult<Vec<SnapshotRecord>> {
        self.store.list_snapshots().map_err(store_err)
    }

    /// The one snapshot `reference` names.
    pub fn show_snapshot(&self, reference: &str) -> CoreResult<SnapshotRecord> {
        let candidates = self
            .store
            .find_snapshots_by_prefix(reference)
            .map_err(store_err)?;
        crate::resolve::pick("snapshot", reference, candidates)
    }

    /// `vm snapshot`: freeze a running VM, save it, copy its disks, run it
    /// again (unless `keep_paused`), record the snapshot.
    pub async fn snapshot_vm(
        &self,
        reference: &str,
        req: &VmSnapshotRequest,
        events: EventSink<'_>,
    ) -> CoreResult<SnapshotRecord> {
        if let Some(name) = &req.name {
            validate::vm_name(name)
                .map_err(|e| CoreError::invalid(e.replace("vm name", "snapshot name")))?;
        }
        let (vm, _guard) = self.awake_vm(reference).await?;
        self.require_running(&vm, "a snapshot holds a running guest's memory")?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
        let agent = self.boot.agent_identity(&kernel)?;
        let name = match &req.name {
            Some(n) => n.clone(),
            None => self.default_snapshot_name(&vm.name)?,
        };
        let scratch = Scratch::new(&self.layout, "snapshot")
            .map_err(|e| internal("create a snapshot directory", &e))?;
        let mut record = SnapshotRecord {
            id: alloc::new_id(),
            name,
            source_vm_id: vm.id.clone(),
            source_vm_name: vm.name.clone(),
            kernel_id: vm.kernel_id.clone(),
            image_id: vm.image_id.clone(),
            agent,
            agent_version: String::new(),
            vmm: self.boot.vmm().to_string(),
            spec: vm.spec.clone(),
            has_nic: false,
            dir: scratch.path().display().to_string(),
            state_bytes: 0,
            disk_bytes: 0,
            state: SnapshotState::Saving,
            created_at: now_rfc3339(),
        };
        // The name is taken from here on; a crash leaves a `saving` row
        // that the next daemon removes.
        self.store.insert_snapshot(&record).map_err(store_err)?;
        stage(events, "save", format!("saving {}", vm.name));
        let (overlay, work) = (
            PathBuf::from(&vm.overlay_disk),
            PathBuf::from(&vm.work_disk),
        );
        let dir = scratch.path().to_path_buf();
        let saved = self
            .boot
            .save(&vm, &dir, req.keep_paused, || {
                copy_disks(&overlay, &work, &dir)
            })
            .await;
        let saved = match saved {
            Ok(s) => s,
            Err(e) => {
                // Files first: on a full disk SQLite needs the room the
                // partial state holds to journal even a delete.
                drop(scratch);
                if let Err(d) = self.store.delete_snapshot(&record.id) {
                    // The next daemon removes a `saving` row at start.
                    tracing::warn!(snapshot = %record.name, error = %d, "row of a failed save left");
                }
                return Err(e);
            }
        };
        record.agent_version = saved.agent_version;
        record.has_nic = saved.has_nic;
        record.disk_bytes = saved.disks;
        record.state_bytes = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name();
                        n != vm_files::OVERLAY_DISK && n != vm_files::WORK_DISK
                    })
                    .map(|e| allocated(&e.path()))
                    .sum()
            })
            .unwrap_or(0);
        let root = self.layout.snapshots_dir();
        let final_dir = root.join(&record.id);
        let placed = std::fs::create_dir_all(&root)
            .and_then(|()| scratch.persist(&final_dir))
            .map_err(|e| disk_error("move the snapshot into place", &e, &root));
        if let Err(e) = placed {
            let _ = self.store.delete_snapshot(&record.id);
            return Err(e);
        }
        record.dir = final_dir.display().to_string();
        record.state = SnapshotState::Ready;
        if let Err(e) = self.store.finish_snapshot(&record) {
            let _ = self.store.delete_snapshot(&record.id);
            remove_any(&final_dir);
            return Err(store_err(e));
        }
        Ok(record)
    }

    /// `<vm>-<n>` with the smallest free `n`.
    fn default_snapshot_name(&self, vm: &str) -> CoreResult<String> {
        let taken: HashSet<String> = self.list_snapshots()?.into_iter().map(|s| s.name).collect();
        let base: String = vm.chars().take(56).collect();
        Ok((1..)
            .map(|n| format!("{base}-{n}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_default())
    }

    /// `snapshot rm`: refused while a restore reads it.
    pub async fn remove_snapshot(&self, reference: &str) -> CoreResult<SnapshotRecord> {
        let snap = self.show_snapshot(reference)?;
        let lock = self.snapshot_locks.of(&snap.id);
        let Ok(_guard) = lock.try_write() else {
            return Err(CoreError::conflict(format!(
                "snapshot {} is in use by a restore; remove it when that has finished",
                snap.name
            )));
        };
        if snap.state == SnapshotState::Saving {
            return Err(CoreError::conflict(format!(
                "snapshot {} is still being saved",
                snap.name
            )));
        }
        tokio::task::block_in_place(|| {
            remove_object(&self.layout, Path::new(&snap.dir), "snapshot", || {
                self.store.delete_snapshot(&snap.id)
            })
        })?;
        Ok(snap)
    }

    /// Why `snap` cannot be restored here, or its image and kernel.
    fn restorable(&self, snap: &SnapshotRecord) -> CoreResult<(ImageRecord, KernelRecord)> {
        let what = format!("snapshot {}", snap.name);
        if snap.state != SnapshotState::Ready {
            return Err(CoreError::conflict(format!("{what} is still being saved")));
        }
        if snap.vmm != self.boot.vmm().as_str() {
            return Err(CoreError::invalid(format!(
                "{what} was saved by {}, and this daemon runs VMs with {}",
                snap.vmm,
                self.boot.vmm()
            )));
        }
        let image = self
            .store
            .get_image(&snap.image_id)
            .map_err(store_err)?
            .filter(|i| Path::new(&i.base_path).exists())
            .ok_or_else(|| {
                CoreError::not_found(format!(
                    "{what} needs image {}, which was removed",
                    snap.image_id
                ))
            })?;
        let kernel = self
            .store
            .get_kernel(&snap.kernel_id)
            .map_err(store_err)?
            .filter(|k| Path::new(&k.kernel_path).exists())
            .ok_or_else(|| {
                CoreError::not_found(format!(
                    "{what} needs kernel {}, which was removed",
                    snap.kernel_id
                ))
            })?;
        let agent = self.boot.agent_identity(&kernel)?;
        if agent != snap.agent {
            return Err(CoreError::conflict(format!(
                "{what} runs another guest agent than this daemon's ({} then, {agent} now): \
                 a restored guest keeps the agent it was saved with; take a new snapshot",
                snap.agent
            )));
        }
        // A saved NIC needs host networking to attach to. A snapshot
        // without one restores without one: a new VM is recorded with no
        // network, and the in-place restore checks its VM's setting.
        if snap.has_nic && !self.resources.network().is_active() {
            return Err(CoreError::conflict(format!(
                "{what} was taken with a NIC and host networking is off now; the restored machine must have one"
            )));
        }
        for f in [vm_files::OVERLAY_DISK, vm_files::WORK_DISK] {
            let p = Path::new(&snap.dir).join(f);
            if !p.exists() {
                return Err(CoreError::not_found(format!(
                    "{what} is damaged: {} is missing",
                    p.display()
                )));
            }
        }
        Ok((image, kernel))
    }

    /// `vm restore S [--name NEW]`.
    pub async fn restore_snapshot(
        &self,
        reference: &str,
        req: &VmRestoreRequest,
        events: EventSink<'_>,
    ) -> CoreResult<StartReport> {
        if let Some(name) = &req.name {
            validate::vm_name(name).map_err(CoreError::invalid)?;
        }
        let snap = self.show_snapshot(reference)?;
        let lock = self.snapshot_locks.of(&snap.id);
        let _reading = lock.read().await;
        // Re-read under the lock: an `rm` may have won the race.
        let snap = self
            .store
            .get_snapshot(&snap.id)
            .map_err(store_err)?
            .ok_or_else(|| CoreError::not_found(format!("snapshot {reference:?} was removed")))?;
        let (image, kernel) = self.restorable(&snap)?;
        match &req.name {
            Some(name) => {
                self.restore_as_new(&snap, name, &image, &kernel, false, events)
                    .await
            }
            None => self.restore_in_place(&snap, &image, &kernel, events).await,
        }
    }

    /// Restore under the original identity: the stopped source VM gets
    /// the saved disks and state back.
    async fn restore_in_place(
        &self,
        snap: &SnapshotRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        events: EventSink<'_>,
    ) -> CoreResult<StartReport> {
        let gone = || {
            CoreError::not_found(format!(
                "vm {} that snapshot {} was taken of is gone; restore it as a new vm with --name",
                snap.source_vm_name, snap.name
            ))
        };
        if self
            .store
            .get_vm(&snap.source_vm_id)
            .map_err(store_err)?
            .is_none()
        {
            return Err(gone());
        }
        let (mut vm, _guard) = self.locked_vm(&snap.source_vm_id).await?;
        if vm.desired_state == VmState::Running || self.boot.live_handles(&vm).is_some() {
            return Err(CoreError::conflict(format!(
                "vm {} is running; stop it before restoring it from {}, or restore a copy with --name",
                vm.name, snap.name
            )));
        }
        if !snap.has_nic && self.boot.has_nic(&vm) {
            return Err(CoreError::conflict(format!(
                "snapshot {} was taken without a NIC and vm {} would get one now that host networking is on; restore a copy with --name, which gets none",
                snap.name, vm.name
            )));
        }
        if vm.image_id != snap.image_id || vm.kernel_id != snap.kernel_id {
            return Err(CoreError::conflict(format!(
                "vm {} has changed image or kernel since snapshot {} was taken; restore it with --name",
                vm.name, snap.name
            )));
        }
        stage(
            events,
            "disks",
            format!("copying the disks of {}", snap.name),
        );
        let vm_dir = PathBuf::from(&vm.dir);
        tokio::task::block_in_place(|| -> CoreResult<()> {
            // Copies beside the VM's disks, then renamed over them: a
            // failure leaves the old disks whole.
            let staged = vm_dir.join("restore.tmp");
            remove_any(&staged);
            std::fs::create_dir(&staged).map_err(|e| internal("stage the restore", &e))?;
            let snap_dir = Path::new(&snap.dir);
            let copied = copy_disks(
                &snap_dir.join(vm_files::OVERLAY_DISK),
                &snap_dir.join(vm_files::WORK_DISK),
                &staged,
            );
            let moved = copied.and_then(|_| {
                for (f, dst) in [
                    (vm_files::OVERLAY_DISK, &vm.overlay_disk),
                    (vm_files::WORK_DISK, &vm.work_disk),
                ] {
                    std::fs::rename(staged.join(f), dst)
                        .map_err(|e| internal(&format!("replace {dst}"), &e))?;
                }
                Ok(())
            });
            remove_any(&staged);
            moved
        })?;
        if vm.spec != snap.spec {
            // The saved machine's memory and disk sizes are the truth now.
            vm.spec = snap.spec.clone();
            vm.updated_at = now_rfc3339();
            self.store.update_vm(&vm).map_err(store_err)?;
        }
        mark_restoring(&vm_dir, MARK_IN_PLACE)?;
        let report = match self
            .boot
            .restore(vm, image, kernel, Path::new(&snap.dir), events)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = unmark_restoring(&vm_dir);
                return Err(e);
            }
        };
        let told = self.boot.tell_identity(&report.vm).await;
        if let Err(e) = told.and_then(|()| unmark_restoring(&vm_dir)) {
            let _ = self.boot.kill(report.vm.clone()).await;
            let _ = unmark_restoring(&vm_dir);
            return Err(e);
        }
        Ok(report)
    }

    /// Restore as a new VM `name`: new id, IP, MAC, CID and host key. With
    /// `take_disks` the snapshot's disk files are moved (a fork's private
    /// snapshot), else copied.
    async fn restore_as_new(
        &self,
        snap: &SnapshotRecord,
        name: &str,
        image: &ImageRecord,
        kernel: &KernelRecord,
        take_disks: bool,
        events: EventSink<'_>,
    ) -> CoreResult<StartReport> {
        if snap
            .vmm
            .parse::<VmmKind>()
            .is_ok_and(|k| k == self.boot.vmm())
            && !self.boot.restores_to_new_paths()
        {
            return Err(CoreError::invalid(format!(
                "snapshot {}: {} reopens the disk paths saved in its state, so its snapshots restore only in place (without --name)",
                snap.name, snap.vmm
            )));
        }
        let host_key = crate::ssh::generate(&format!("root@{name}"))?;
        let bridge = self.config.network.bridge_cidr;
        let snap_dir = PathBuf::from(&snap.dir);
        let vm = tokio::task::block_in_place(|| -> CoreResult<VmRecord> {
            let _create = self.vms.create_guard();
            let existing = self.vms.list()?;
            if existing.iter().any(|v| v.name == name) {
                return Err(taken("vm", name));
            }
            let ips: HashSet<Ipv4Addr> = existing
                .iter()
                .filter_map(|v| v.guest_ip.parse().ok())
                .collect();
            let ip = alloc::next_ip(bridge, &ips).ok_or_else(|| {
                CoreError::conflict(format!("no free guest address left in {bridge}"))
            })?;
            let cids: HashSet<u32> = existing.iter().map(|v| v.vsock_cid).collect();
            let id = alloc::new_id();
            let vms_dir = self.layout.vms_dir();
            let scratch = Scratch::new(&self.layout, "vm")
                .map_err(|e| disk_error("create a vm directory", &e, &vms_dir))?;
            stage(
                events,
                "disks",
                format!("copying the disks of {}", snap.name),
            );
            if take_disks {
                for f in [vm_files::OVERLAY_DISK, vm_files::WORK_DISK] {
                    std::fs::rename(snap_dir.join(f), scratch.path().join(f))
                        .map_err(|e| internal("move the fork's disks", &e))?;
                }
            } else {
                copy_disks(
                    &snap_dir.join(vm_files::OVERLAY_DISK),
                    &snap_dir.join(vm_files::WORK_DISK),
                    scratch.path(),
                )?;
            }
            // Whole only once the guest has its identity (see below).
            mark_restoring(scratch.path(), MARK_NEW)?;
            let dir = self.layout.vm_dir(&id);
            scratch
                .persist(&dir)
                .map_err(|e| disk_error("move the vm into place", &e, &vms_dir))?;
            let now = now_rfc3339();
            let record = VmRecord {
                id: id.clone(),
                name: name.to_owned(),
                image_id: snap.image_id.clone(),
                kernel_id: snap.kernel_id.clone(),
                spec: snap.spec.clone(),
                desired_state: VmState::Stopped,
                guest_ip: ip.to_string(),
                vsock_cid: alloc::next_cid(&cids),
                dir: dir.display().to_string(),
                overlay_disk: dir.join(vm_files::OVERLAY_DISK).display().to_string(),
                work_disk: dir.join(vm_files::WORK_DISK).display().to_string(),
                created_at: now.clone(),
                updated_at: now,
                paused: false,
                // Published host ports belong to the source VM; a copy
                // publishing the same ones could never start beside it.
                ports: Vec::new(),
                // The saved devices have a NIC or not; the copy must match.
                network: if snap.has_nic {
                    banger_api::VmNetwork::Auto
                } else {
                    banger_api::VmNetwork::None
                },
                // The source's egress when it still exists (a copy must not
                // escape the policy its source had), else the default.
                egress: existing
                    .iter()
                    .find(|v| v.id == snap.source_vm_id)
                    .map(|v| v.egress.clone())
                    .unwrap_or_else(|| self.config.network.egress.clone()),
                no_network: None,
                agent_fault: None,
                confinement: None,
                idle_suspend_secs: None,
                suspended: false,
            };
            // known_hosts before the record, as for a create.
            let alias = crate::paths::ssh_host_alias(&record.id);
            let names = vec![
                format!("{}.{}", record.name, self.config.network.domain),
                record.guest_ip.clone(),
                alias.clone(),
            ];
            let recorded = crate::ssh::add_known_host(&self.layout, &names, &host_key.public)
                .and_then(|()| self.store.insert_vm(&record).map_err(store_err));
            if let Err(e) = recorded {
                let _ = crate::ssh::remove_known_host(&self.layout, &alias);
                remove_any(&dir);
                return Err(e);
            }
            Ok(record)
        })?;
        let lock = self.vms.vm_lock(&vm.id);
        let _guard = lock.lock().await;
        let result = async {
            let report = self
                .boot
                .restore(vm.clone(), image, kernel, &snap_dir, events)
                .await?;
            stage(
                events,
                "identity",
                format!("{} takes its own identity", vm.name),
            );
            self.boot.tell_identity(&report.vm).await?;
            self.write_identity_files(&report.vm, &host_key).await?;
            unmark_restoring(Path::new(&report.vm.dir))?;
            Ok(report)
        }
        .await;
        match result {
            Ok(report) => Ok(report),
            Err(e) => {
                // Nothing half-made: the new VM goes with its files.
                let id = vm.id.clone();
                if let Err(k) = self.boot.kill(vm).await {
                    tracing::warn!(error = %k, "kill of a failed restore");
                }
                if let Ok(Some(vm)) = self.store.get_vm(&id)
                    && let Err(r) = tokio::task::block_in_place(|| self.vms.remove_locked(vm))
                {
                    tracing::warn!(error = %r, "removal of a failed restore");
                }
                Err(e)
            }
        }
    }

    /// The per-VM files of a new identity, written through the guest's
    /// overlay (the disk is in use, so never from the host).
    async fn write_identity_files(
        &self,
        vm: &VmRecord,
        host_key: &crate::ssh::KeyPair,
    ) -> CoreResult<()> {
        let bridge = self.config.network.bridge_cidr;
        let net = GuestNet {
            ip: vm.guest_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            bridge,
            dns: vec![bridge.addr()],
            domain: self.config.network.domain.clone(),
        };
        let mut files: Vec<(String, Vec<u8>, u32)> = guest_files::guest_files(&vm.name, &net)
            .into_iter()
            .map(|f| (f.path.to_owned(), f.contents.into_bytes(), f.mode))
            .collect();
        files.push((
            guest_files::SSH_HOST_KEY.to_owned(),
            host_key.private.clone().into_bytes(),
            0o600,
        ));
        files.push((
            format!("{}.pub", guest_files::SSH_HOST_KEY),
            format!("{}\n", host_key.public).into_bytes(),
            0o644,
        ));
        let fail = |e: &dyn std::fmt::Display| {
            CoreError::internal(format!("write the identity files of {}: {e}", vm.name))
        };
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data, mode) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            );
            tar.append_data(&mut h, path, data.as_slice())
                .map_err(|e| fail(&e))?;
        }
        let data = tar.into_inner().map_err(|e| fail(&e))?;
        let agent = self.boot.agent(vm).await?;
        let stream = agent.copy_in("/").await.map_err(|e| fail(&e))?;
        let tx = stream.sender();
        tx.write(&data).await.map_err(|e| fail(&e))?;
        tx.close().map_err(|e| fail(&e))?;
        stream.finish().await.map_err(|e| fail(&e))
    }

    /// `vm fork VM NEW`: a private snapshot of the running VM (it pauses
    /// for the save and runs on), restored at once as the new VM `NEW`.
    pub async fn fork_vm(
        &self,
        reference: &str,
        req: &VmForkRequest,
        events: EventSink<'_>,
    ) -> CoreResult<StartReport> {
        validate::vm_name(&req.name).map_err(CoreError::invalid)?;
        if self.vms.list()?.iter().any(|v| v.name == req.name) {
            return Err(taken("vm", &req.name));
        }
        let scratch = Scratch::new(&self.layout, "fork")
            .map_err(|e| internal("create a fork directory", &e))?;
        let dir = scratch.path().to_path_buf();
        let snap = {
            let (vm, _guard) = self.awake_vm(reference).await?;
            if !self.boot.restores_to_new_paths() {
                return Err(CoreError::invalid(format!(
                    "vm fork is not possible under {}: it reopens the disk paths saved in its state",
                    self.boot.vmm()
                )));
            }
            // Refused before anything is made: the agent's identity builds
            // the kernel's initramfs when no start has yet.
            self.require_running(&vm, "a fork starts from a running guest")?;
            let kernel = self.kernels.get(&vm.kernel_id)?;
            let agent = self.boot.agent_identity(&kernel)?;
            stage(events, "save", format!("saving {}", vm.name));
            let (overlay, work) = (
                PathBuf::from(&vm.overlay_disk),
                PathBuf::from(&vm.work_disk),
            );
            let saved = self
                .boot
                .save(&vm, &dir, false, || copy_disks(&overlay, &work, &dir))
                .await?;
            SnapshotRecord {
                id: alloc::new_id(),
                name: format!("fork of {}", vm.name),
                source_vm_id: vm.id.clone(),
                source_vm_name: vm.name.clone(),
                kernel_id: vm.kernel_id.clone(),
                image_id: vm.image_id.clone(),
                agent,
                agent_version: saved.agent_version,
                vmm: saved.vmm,
                spec: vm.spec.clone(),
                has_nic: saved.has_nic,
                dir: dir.display().to_string(),
                state_bytes: 0,
                disk_bytes: saved.disks,
                state: SnapshotState::Ready,
                created_at: now_rfc3339(),
            }
        };
        let (image, kernel) = self.restorable(&snap)?;
        self.restore_as_new(&snap, &req.name, &image, &kernel, true, events)
            .await
    }
}
