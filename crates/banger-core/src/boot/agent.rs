//! The daemon's one connection to each running VM's agent: made on first
//! use, shared by every exec, copy and stream, dropped when a request finds
//! it stale.

use std::sync::Arc;
use std::time::Duration;

use banger_api::VmRecord;
use banger_proto::client::AgentClient;
use banger_vmm::Driver;

use super::service::{AgentSlot, BootService, vmm_err};
use crate::error::{CoreError, CoreResult};

impl BootService {
    /// This VM's agent slot, made empty on first use.
    pub(super) fn agent_slot(&self, id: &str) -> AgentSlot {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Drop this daemon's connection to a VM's agent, so the next
    /// [`Self::agent`] reconnects: for callers whose request failed on it.
    pub async fn forget_agent(&self, vm: &VmRecord) {
        self.agent_slot(&vm.id).lock().await.take();
    }

    /// The agent of a running VM, connecting (again) when this daemon has no
    /// connection yet: after a restart, or after [`Self::forget_agent`]. No
    /// probe on the hot path: a request that fails on a stale connection
    /// forgets it and retries once.
    pub async fn agent(&self, vm: &VmRecord) -> CoreResult<Arc<AgentClient>> {
        let Some(h) = self.live_handles(vm) else {
            return Err(CoreError::conflict(format!(
                "vm {} is not running; start it with `banger vm start {}`",
                vm.name, vm.name
            )));
        };
        Self::refuse_paused(vm, &h)?;
        let slot = self.agent_slot(&vm.id);
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self
            .driver_for(&h)
            .connect_agent(&h, Duration::from_secs(10))
            .await
            .map_err(|e| vmm_err(&format!("connect to the agent of {}", vm.name), &e))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// How busy this daemon's connection to `vm`'s agent is (see
    /// `AgentClient::activity`), without connecting: None when there is no
    /// connection, or it is being made.
    pub fn agent_activity(&self, vm: &VmRecord) -> Option<(usize, u32)> {
        let slot = self.agent_slot(&vm.id);
        let slot = slot.try_lock().ok()?;
        slot.as_ref().map(|c| c.activity())
    }
}
