//! The VMM half of snapshots: freeze a running VM and save its memory and
//! device state, and restore a VM from saved state instead of booting it,
//! then tell its agent who it is now.
//!
//! A save is one instant: the vCPUs stop, the driver writes the state
//! (QEMU `migrate` to a file, Firecracker `/snapshot/create`), the caller
//! copies the disks while the guest is still frozen (QEMU drains its block
//! I/O on stop, so disk and memory agree), and only then the guest runs
//! again. A restore is a start whose launch spec names the saved state
//! (`LaunchSpec::incoming`): same machine, this VM's disks and sockets.

use std::path::Path;
use std::time::Duration;

use banger_api::{ImageRecord, KernelRecord, VmRecord};
use banger_proto::{GuestIdentity, GuestNet};
use banger_vmm::{Driver, VmHandles};

use super::service::{BootService, vmm_err};
use crate::error::{CoreError, CoreResult};
use crate::events::{EventSink, stage};
use banger_api::StartReport;

/// How long writing or loading a VM's state may take: a few GiB at disk
/// speed, on a loaded machine.
const STATE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a daemon starting up waits for an abandoned save to end once
/// cancelled (QEMU stops at the next chunk it writes).
const ABORT_TIMEOUT: Duration = Duration::from_secs(20);

/// What a save learned about the VM, beside what the caller's disk copy
/// returned.
#[derive(Debug)]
pub struct Saved<T> {
    /// The VMM that wrote the state.
    pub vmm: String,
    /// The running agent's version.
    pub agent_version: String,
    /// Whether the VM runs with a NIC.
    pub has_nic: bool,
    /// What `copy_disks` returned.
    pub disks: T,
}

impl BootService {
    /// The identity of the agent (and the rest of the initramfs) a VM of
    /// `kernel` gets today: the initramfs file name, which carries the
    /// hash of the agent binary and modules. A restored guest keeps the
    /// agent it was saved with, so a snapshot records this and a restore
    /// compares.
    pub fn agent_identity(&self, kernel: &KernelRecord) -> CoreResult<String> {
        let path = tokio::task::block_in_place(|| self.initramfs_for(kernel))?;
        Ok(path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default())
    }

    /// Freezes `vm`, saves its state into `dir`, runs `copy_disks` while it
    /// is frozen, and lets it run again unless `keep_paused` (a VM that was
    /// paused before stays paused). A failed save empties `dir` before the
    /// guest runs again: on a full disk the partial state holds the room
    /// that recording the resume needs. Caller holds the lock.
    pub async fn save<T>(
        &self,
        vm: &VmRecord,
        dir: &Path,
        keep_paused: bool,
        copy_disks: impl FnOnce() -> CoreResult<T>,
    ) -> CoreResult<Saved<T>> {
        let Some(mut h) = self.live_handles(vm) else {
            return Err(CoreError::conflict(format!(
                "vm {} is not running: a snapshot holds a running guest's memory; start it with `banger vm start {}`",
                vm.name, vm.name
            )));
        };
        let was_paused = h.paused;
        let agent_version = if was_paused {
            // No exec into a paused guest; the cached connection knows.
            self.cached_agent(vm).await
        } else {
            Some(self.agent(vm).await?.agent_version().to_owned())
        }
        .ok_or_else(|| {
            CoreError::conflict(format!(
                "vm {} is paused and this daemon has not talked to its agent yet; resume it first",
                vm.name
            ))
        })?;
        let driver = self.driver_for(&h);
        if !was_paused {
            // Recorded before the pause: a daemon killed right after the
            // `stop` must leave a mark that this freeze was not the user's.
            h.saving = true;
            self.remember_handles(vm, &h)?;
            if let Err(e) = driver.pause(&h).await {
                h.saving = false;
                let _ = self.remember_handles(vm, &h);
                return Err(vmm_err(&format!("pause {}", vm.name), &e));
            }
            h.paused = true;
            self.remember_handles(vm, &h)?;
        }
        let result = async {
            driver
                .save_state(&h, dir, STATE_TIMEOUT)
                .await
                .map_err(|e| save_err(vm, dir, &e))?;
            tokio::task::block_in_place(copy_disks)
        }
        .await;
        if result.is_err() {
            empty_dir(dir);
        }
        h.saving = false;
        if !keep_paused && !was_paused {
            // Whatever happened to the save, the guest runs again.
            self.resume_handles(vm, &mut h).await?;
        } else if !was_paused {
            self.remember_handles(vm, &h)?;
        }
        Ok(Saved {
            vmm: driver.name().to_owned(),
            agent_version,
            has_nic: self.has_nic(vm),
            disks: result?,
        })
    }

    /// At daemon start: a VM left paused by a save that a dead daemon
    /// never finished runs again (the pause was not the user's). The save
    /// itself may still be running in the VMM (QEMU migrates on without
    /// its client, into a file the new daemon already removed from `tmp/`):
    /// it is ended first, because a guest resumed under a running migration
    /// is frozen again when the migration completes (`postmigrate`), while
    /// its handles say it runs, and every agent call then times out.
    ///
    /// A save of a VM the user had paused leaves no mark (the pause is the
    /// user's and stays), but its migration may run on all the same, so a
    /// paused VM's is ended too: else a later `vm resume` would be undone.
    pub(super) async fn resume_interrupted_save(&self, vm: &VmRecord, h: &mut VmHandles) {
        if !h.saving && !h.paused {
            return;
        }
        let driver = self.driver_for(h);
        if let Err(e) = driver.abort_save(h, ABORT_TIMEOUT).await {
            tracing::warn!(vm = %vm.name, error = %e, "ending an interrupted snapshot save");
        }
        if !h.saving {
            return;
        }
        h.saving = false;
        match self.resume_handles(vm, h).await {
            Ok(()) => tracing::info!(vm = %vm.name, "resumed after an interrupted snapshot"),
            Err(e) => {
                // Left as it is, recorded paused: `vm ls` says so and `vm
                // resume` or `vm stop` can act on it.
                h.paused = true;
                let _ = self.remember_handles(vm, h);
                tracing::warn!(vm = %vm.name, error = %e, "resume after an interrupted snapshot");
            }
        }
    }

    /// The agent version of the connection this daemon holds, if any.
    async fn cached_agent(&self, vm: &VmRecord) -> Option<String> {
        let slot = self.agent_slot(&vm.id);
        let slot = slot.lock().await;
        slot.as_ref().map(|c| c.agent_version().to_owned())
    }

    /// Starts `vm` from the saved state in `dir` (whose disks the caller
    /// already put in place as the VM's own). Caller holds the lock.
    pub async fn restore(
        &self,
        vm: VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        dir: &Path,
        events: EventSink<'_>,
    ) -> CoreResult<StartReport> {
        if !dir.join(self.driver.kind().state_file()).exists() {
            return Err(CoreError::invalid(format!(
                "{} holds no {} state",
                dir.display(),
                self.driver.name()
            )));
        }
        self.launch(vm, image, kernel, events, Some(dir), false)
            .await
    }

    /// Waits for the VMM to load the state and runs the vCPUs (called by
    /// `launch` between spawn and the agent wait).
    pub(super) async fn finish_restore(
        &self,
        vm: &VmRecord,
        h: &VmHandles,
        events: EventSink<'_>,
    ) -> CoreResult<()> {
        stage(events, "restore", "loading the saved state");
        self.driver
            .finish_restore(h, STATE_TIMEOUT)
            .await
            .map_err(|e| vmm_err(&format!("restore {}", vm.name), &e))
    }

    /// Tells the restored guest of `vm` who it is: its name, the host's
    /// clock, fresh entropy, and its NIC's MAC and address when it has one.
    pub async fn tell_identity(&self, vm: &VmRecord) -> CoreResult<()> {
        // The connection first: the identity carries the host's clock,
        // which must be read as late as possible before it is sent.
        let agent = self.agent(vm).await?;
        let told = agent
            .set_identity(self.identity_for(vm))
            .await
            .map_err(|e| {
                crate::error::internal(
                    &format!(
                        "{} was restored but its agent did not take the new identity",
                        vm.name
                    ),
                    &e,
                )
            });
        // The identity's clock is as old as the message took; a step now
        // leaves only the step's own latency.
        if told.is_ok() {
            self.step_clock(vm).await;
        }
        told
    }

    /// Who `vm` is, for its agent: name, the host's clock now, fresh
    /// entropy, and its NIC's MAC and address when it has one.
    pub(super) fn identity_for(&self, vm: &VmRecord) -> GuestIdentity {
        let mut entropy = [0u8; 64];
        rand::fill(&mut entropy);
        let realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let net = self.has_nic(vm).then(|| {
            let cidr = self.config.network.bridge_cidr;
            GuestNet {
                mac: crate::network::mac_for(&vm.id),
                address: format!("{}/{}", vm.guest_ip, cidr.prefix_len()),
                gateway: cidr.addr().to_string(),
            }
        });
        GuestIdentity {
            hostname: vm.name.clone(),
            realtime_ns,
            entropy_hex: hex::encode(entropy),
            net,
        }
    }
}

/// Removes what `dir` holds, keeping `dir`.
fn empty_dir(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        crate::scratch::remove_any(&e.path());
    }
}

/// A failed save. QEMU writes through `cat`, whose ENOSPC reaches us only
/// as a failed migration, so a filesystem left with less room than the
/// guest's memory counts as full too.
pub(super) fn save_err(vm: &VmRecord, dir: &Path, e: &banger_vmm::VmmError) -> CoreError {
    let room = rustix::fs::statvfs(dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX);
    if crate::error::is_no_space(e) || room < vm.spec.memory_mib << 20 {
        return CoreError::no_space(dir.display());
    }
    vmm_err(&format!("save the state of {}", vm.name), e)
}
