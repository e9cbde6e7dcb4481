//! The daemon's one connection to each running VM's agent: made on first
//! use, shared by every exec, copy and stream, dropped when a request finds
//! it stale. An agent the client cuts off (a flood, a full outbox) or
//! refuses (no flow control) is logged and its reason kept for `vm show`
//! ([`BootService::agent_fault`]) until the run ends.

use std::sync::Arc;
use std::time::Duration;

use banger_api::VmRecord;
use banger_proto::client::{AgentClient, ClientError};
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
        // A connection the client cut off is over: the next one is fresh
        // (and bounded the same way, whatever the agent does again).
        if let Some(c) = slot.as_ref()
            && c.cut_off_reason().is_none()
        {
            return Ok(c.clone());
        }
        let client = match self
            .driver_for(&h)
            .connect_agent(&h, Duration::from_secs(10))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if let banger_vmm::VmmError::Agent(refusal @ ClientError::NoFlowControl { .. }) = &e
                {
                    self.record_agent_fault(vm, refusal.to_string());
                }
                return Err(vmm_err(&format!("connect to the agent of {}", vm.name), &e));
            }
        };
        let client = self.watch_agent(vm, client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Keeps watch on a fresh agent connection: if the client cuts the
    /// agent off, the reason is logged and kept for `vm show`.
    pub(super) fn watch_agent(&self, vm: &VmRecord, client: AgentClient) -> Arc<AgentClient> {
        let ended = client.end_watch();
        let faults = self.agent_faults.clone();
        let (id, name) = (vm.id.clone(), vm.name.clone());
        tokio::spawn(async move {
            if let Some(reason) = ended.ended().await {
                tracing::warn!(vm = %name, "guest agent cut off: {reason}");
                faults
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, format!("cut off: {reason}"));
            }
        });
        Arc::new(client)
    }

    fn record_agent_fault(&self, vm: &VmRecord, fault: String) {
        tracing::warn!(vm = %vm.name, "guest agent refused: {fault}");
        self.agent_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.id.clone(), fault);
    }

    /// Why this run's agent was cut off or refused, if it was.
    pub fn agent_fault(&self, vm: &VmRecord) -> Option<String> {
        self.agent_faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&vm.id)
            .cloned()
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
