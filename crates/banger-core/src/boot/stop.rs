//! Ending a run: a clean stop through the agent (with a kill after the
//! timeout), a kill, and settling a VM whose VMM went away by itself.

use std::time::Duration;

use banger_api::{VmRecord, VmState};
use banger_vmm::Driver;

use super::service::{BootService, vmm_err};
use crate::error::CoreResult;

impl BootService {
    /// Shut the guest down through its agent, killing the VMM after
    /// `timeout`. Returns whether it stopped cleanly. Caller holds the lock.
    pub async fn stop(&self, mut vm: VmRecord, timeout: Duration) -> CoreResult<(VmRecord, bool)> {
        let Some(h) = self.live_handles(&vm) else {
            self.clear_runtime(&vm).await;
            if vm.desired_state != VmState::Stopped {
                self.set_state(&mut vm, VmState::Stopped)?;
            }
            return Ok((vm, true));
        };
        let mut h = h;
        if h.paused {
            // A frozen guest cannot shut itself down: run it again first.
            // If that fails the kill below still stops it.
            let _ = self.resume_handles(&vm, &mut h).await;
        }
        // Through our own agent connection: the QEMU serial channel takes
        // one client at a time, and the agent's shutdown works with or
        // without an init in the guest.
        let mut asked = false;
        for _attempt in 0..2 {
            let Ok(agent) = self.agent(&vm).await else {
                break;
            };
            if agent.shutdown(false).await.is_ok() {
                asked = true;
                break;
            }
            self.forget_agent(&vm).await;
        }
        let clean = asked && banger_vmm::wait_exit(&h, timeout).await;
        if !clean {
            let _ = self.driver_for(&h).kill(&h);
            banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        }
        self.clear_runtime(&vm).await;
        self.set_state(&mut vm, VmState::Stopped)?;
        Ok((vm, clean))
    }

    /// Kill the VMM now. Caller holds the lock.
    pub async fn kill(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        if let Some(h) = self.live_handles(&vm) {
            self.driver_for(&h)
                .kill(&h)
                .map_err(|e| vmm_err(&format!("kill {}", vm.name), &e))?;
            banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        }
        self.clear_runtime(&vm).await;
        self.set_state(&mut vm, VmState::Stopped)?;
        Ok(vm)
    }

    /// A VM recorded as running whose VMM is gone (the guest powered itself
    /// off, the VMM crashed) is cleaned up and recorded as stopped, so
    /// listings never report a dead VM as running. Caller holds the lock.
    pub async fn settle(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        if vm.desired_state == VmState::Running
            && self.live_handles(&vm).is_none()
            && !self.is_suspended(&vm)
        {
            self.clear_runtime(&vm).await;
            self.set_state(&mut vm, VmState::Stopped)?;
        }
        Ok(vm)
    }
}
