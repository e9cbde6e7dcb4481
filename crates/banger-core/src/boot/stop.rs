//! Ending a run: a clean stop through the agent (with a kill at the
//! deadline), a kill, and settling a VM whose VMM went away by itself.
//!
//! Nothing here waits on a guest without a deadline, and nothing waits on
//! a guest while holding the VM's lock longer than the caller's deadline:
//! a stop is three phases ([`Services::stop_vm`](crate::Services::stop_vm)),
//! asking the guest under the lock ([`BootService::ask_stop`], the ack
//! waited for up to the deadline), waiting for the VMM to exit without it,
//! then killing what is left under the lock again
//! ([`BootService::finish_stop`]). A kill first SIGKILLs the VM's VMM
//! without the lock ([`BootService::kill_now`]): whatever holds the lock
//! waiting on that guest (a boot waiting for its agent, an image commit
//! streaming from it, a stop's ask) then fails at once, so `vm kill` and
//! `vm rm -f` never queue behind a guest.

use std::time::Duration;

use banger_api::{VmRecord, VmState};
use banger_vmm::{Driver, VmHandles};
use tokio::time::Instant;

use super::service::{BootService, vmm_err};
use crate::error::CoreResult;

/// How long a SIGKILLed VMM may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What the first phase of a stop left to do.
#[derive(Debug)]
pub enum Stopping {
    /// Nothing was running: the VM is recorded stopped.
    Done(Box<VmRecord>),
    /// The guest was asked (`asked`: its agent acknowledged) to shut down;
    /// wait for this VMM to exit, then [`BootService::finish_stop`].
    Asked {
        /// The VMM the stop is about.
        handles: VmHandles,
        /// The agent acknowledged the shutdown.
        asked: bool,
    },
}

impl BootService {
    /// Phase one of a stop, under the VM's lock: resume a paused guest and
    /// ask it, through its agent, to power off. Connecting and waiting for
    /// the ack both end at `deadline`, whatever the guest does.
    pub async fn ask_stop(&self, mut vm: VmRecord, deadline: Instant) -> CoreResult<Stopping> {
        let Some(mut h) = self.live_handles(&vm) else {
            self.clear_runtime(&vm).await;
            if vm.desired_state != VmState::Stopped {
                self.set_state(&mut vm, VmState::Stopped)?;
            }
            return Ok(Stopping::Done(Box::new(vm)));
        };
        if h.paused {
            // A frozen guest cannot shut itself down: run it again first.
            // If that fails the kill at the deadline still stops it.
            let _ = tokio::time::timeout_at(deadline, self.resume_handles(&vm, &mut h)).await;
        }
        // Through our own agent connection: the QEMU serial channel takes
        // one client at a time, and the agent's shutdown works with or
        // without an init in the guest.
        let ask = async {
            for _attempt in 0..2 {
                let Ok(agent) = self.agent(&vm).await else {
                    return false;
                };
                if agent.shutdown(false).await.is_ok() {
                    return true;
                }
                self.forget_agent(&vm).await;
            }
            false
        };
        let asked = tokio::time::timeout_at(deadline, ask)
            .await
            .unwrap_or(false);
        Ok(Stopping::Asked { handles: h, asked })
    }

    /// Phase three, under the lock again: if `h`'s VMM still runs, kill it;
    /// then record the VM stopped. A VM that was killed, removed or started
    /// again meanwhile is left as it is now. Returns whether it ended
    /// cleanly (exited by itself after the guest acknowledged).
    pub async fn finish_stop(
        &self,
        mut vm: VmRecord,
        h: &VmHandles,
        asked: bool,
    ) -> CoreResult<(VmRecord, bool)> {
        let driver = self.driver_for(h);
        let still = driver.is_alive(h);
        if still {
            let _ = driver.kill(h);
            banger_vmm::wait_exit(h, KILL_WAIT).await;
        }
        match self.live_handles(&vm) {
            // Started again by someone else meanwhile: not ours to end.
            Some(now) if (now.pid, now.pid_start_time) != (h.pid, h.pid_start_time) => {
                return Ok((vm, false));
            }
            _ => {}
        }
        self.clear_runtime(&vm).await;
        if vm.desired_state != VmState::Stopped {
            self.set_state(&mut vm, VmState::Stopped)?;
        }
        Ok((vm, asked && !still))
    }

    /// SIGKILLs the VM's VMM now, without its lock: by its handles, and any
    /// VMM process naming its id (one whose handles a boot in progress has
    /// not written yet). The caller then takes the lock and
    /// [`Self::kill`]s to record it.
    pub fn kill_now(&self, vm: &VmRecord) {
        if let Some(h) = self.live_handles(vm) {
            let _ = self.driver_for(&h).kill(&h);
        }
        // Every VMM of this VM names its id: QEMU its disks under
        // `vms/<id>/`, Firecracker its sockets there or, jailed, its
        // chroot `<id>-<hash>`.
        for (pid, start) in banger_vmm::process::vmms_naming(&vm.id) {
            let _ = banger_vmm::process::kill(pid, start);
        }
    }

    /// Kill the VMM now. Caller holds the lock.
    pub async fn kill(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        if let Some(h) = self.live_handles(&vm) {
            self.driver_for(&h)
                .kill(&h)
                .map_err(|e| vmm_err(&format!("kill {}", vm.name), &e))?;
            banger_vmm::wait_exit(&h, KILL_WAIT).await;
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
