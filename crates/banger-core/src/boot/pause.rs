//! Pause and resume: the vCPUs of a running VM stopped and run again.
//!
//! Paused is a momentary fact, like the VMM's pid: it is true only of this
//! VMM process (a new one always starts running), so it lives in the VM's
//! [`VmHandles`] (`handles.json`, `"paused": true`) and never in the store,
//! whose desired state stays `running`. A daemon restarted while a VM is
//! paused re-adopts it paused from the file. Records answered to clients
//! carry it as [`VmRecord::paused`], filled from the handles whenever a
//! record is answered (`Services::show_vm`, `list_vms`).

use banger_api::VmRecord;
use banger_vmm::{Driver, VmHandles};

use super::service::{BootService, vmm_err};
use crate::error::{CoreError, CoreResult, chain};

impl BootService {
    /// The handles of a running VM, or the one-line reason it has none.
    fn running_handles(&self, vm: &VmRecord) -> CoreResult<VmHandles> {
        self.live_handles(vm).ok_or_else(|| {
            CoreError::conflict(format!(
                "vm {} is not running; start it with `banger vm start {}`",
                vm.name, vm.name
            ))
        })
    }

    /// Records the paused flag in memory and in `handles.json`.
    pub(super) fn remember_handles(&self, vm: &VmRecord, h: &VmHandles) -> CoreResult<()> {
        Self::save_handles(vm, h)?;
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.id.clone(), h.clone());
        Ok(())
    }

    /// Stops the vCPUs of a running VM. Caller holds the lock.
    pub async fn pause(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        let mut h = self.running_handles(&vm)?;
        if h.paused {
            return Err(CoreError::conflict(format!(
                "vm {} is already paused",
                vm.name
            )));
        }
        let driver = self.driver_for(&h);
        // Recorded before the `stop`: a daemon killed between the two then
        // leaves a running guest recorded paused, which `vm resume` puts
        // right (a `cont` of a running guest does nothing). The other order
        // would leave a frozen guest recorded running, on which every
        // agent call times out.
        h.paused = true;
        self.remember_handles(&vm, &h)?;
        if let Err(e) = driver.pause(&h).await {
            h.paused = false;
            let _ = self.remember_handles(&vm, &h);
            return Err(vmm_err(&format!("pause {}", vm.name), &e));
        }
        vm.paused = true;
        Ok(vm)
    }

    /// Runs the vCPUs of a paused VM again. Caller holds the lock.
    pub async fn resume(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        let mut h = self.running_handles(&vm)?;
        if !h.paused {
            return Err(CoreError::conflict(format!("vm {} is not paused", vm.name)));
        }
        self.resume_handles(&vm, &mut h).await?;
        vm.paused = false;
        Ok(vm)
    }

    /// Resumes `h` and records it running. Used by `resume` and by stop,
    /// which resumes first so the guest can shut down cleanly.
    pub(super) async fn resume_handles(&self, vm: &VmRecord, h: &mut VmHandles) -> CoreResult<()> {
        self.driver_for(h)
            .resume(h)
            .await
            .map_err(|e| vmm_err(&format!("resume {}", vm.name), &e))?;
        h.paused = false;
        // The guest runs now, whatever becomes of the file (a full disk):
        // this daemon must not go on calling it paused. A stale file only
        // makes a later daemon treat a running guest as paused.
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.id.clone(), h.clone());
        let saved = Self::save_handles(vm, h);
        // The guest's clock stood still with its vCPUs: step it to now.
        self.step_clock(vm).await;
        saved
    }

    /// Steps the guest's wall clock to the host's after its clock stood
    /// still (a resume, a wake). Best effort: a guest whose agent cannot
    /// answer (it is shutting down, an old agent) keeps its clock, and the
    /// log says so.
    pub(super) async fn step_clock(&self, vm: &VmRecord) {
        let stepped = match self.agent(vm).await {
            Ok(agent) => agent.set_clock().await.map_err(|e| chain(&e)),
            Err(e) => Err(e.to_string()),
        };
        match stepped {
            Ok(behind_ns) => {
                tracing::debug!(vm = %vm.name, behind_ms = behind_ns / 1_000_000, "stepped the guest clock")
            }
            Err(e) => tracing::warn!(vm = %vm.name, error = %e, "could not step the guest clock"),
        }
    }

    /// Refuses work that needs the guest to run (an exec) while it is
    /// paused. An error rather than an implicit resume: pausing is an
    /// explicit choice (to freeze a guest for inspection or a snapshot),
    /// and an exec that quietly undid it, or hung until someone resumed,
    /// would be worse than being told.
    pub(super) fn refuse_paused(vm: &VmRecord, h: &VmHandles) -> CoreResult<()> {
        if h.paused {
            return Err(CoreError::conflict(format!(
                "vm {} is paused; resume it with `banger vm resume {}`",
                vm.name, vm.name
            )));
        }
        Ok(())
    }
}
