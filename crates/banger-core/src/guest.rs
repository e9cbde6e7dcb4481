//! Reaching into a running guest, as the daemon's routes do: the agent
//! connection with its one retry when the cached connection went stale,
//! the guest's listening ports, and a VM's resource usage (the guest's own
//! report beside the host's view of its VMM, disks and tap), and where its
//! console log is.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use banger_api::{DiskFile, NetUsage, VmRecord, VmState, VmStats, VmmUsage};
use banger_proto::client::{AgentClient, ClientError};
use banger_proto::{GuestStats, ListeningPort};

use crate::Services;
use crate::boot::BootService;
use crate::error::{CoreError, CoreResult};

impl Services {
    /// Runs `op` on the VM's agent connection. The cached connection may
    /// have gone stale (the guest agent restarted): on a connection error
    /// it is forgotten and `op` runs once more on a fresh one.
    pub async fn with_agent<T, F, Fut>(&self, vm_ref: &str, op: F) -> CoreResult<T>
    where
        F: Fn(Arc<AgentClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let agent = self.agent_of(vm_ref).await?;
        self.on_agent(vm_ref, agent, op).await
    }

    /// [`Self::with_agent`] on a connection the caller already looked up
    /// (an exec checks it before switching protocols), with the same one
    /// retry.
    pub async fn on_agent<T, F, Fut>(
        &self,
        vm_ref: &str,
        agent: Arc<AgentClient>,
        op: F,
    ) -> CoreResult<T>
    where
        F: Fn(Arc<AgentClient>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        match op(agent).await {
            Err(ClientError::Closed | ClientError::Io { .. }) => {
                self.forget_agent(vm_ref).await;
                let fresh = self.agent_of(vm_ref).await?;
                op(fresh).await.map_err(|e| agent_error(vm_ref, e))
            }
            other => other.map_err(|e| agent_error(vm_ref, e)),
        }
    }

    /// The guest's listening sockets, asked of its agent.
    pub async fn vm_ports(&self, vm_ref: &str) -> CoreResult<Vec<ListeningPort>> {
        self.with_agent(vm_ref, |a| async move { a.ports().await })
            .await
    }

    /// A VM's resource usage: the guest's report (when it answers) beside
    /// the host's view.
    pub async fn vm_stats(&self, vm_ref: &str) -> CoreResult<VmStats<GuestStats>> {
        let vm = self.show_vm(vm_ref).await?;
        let running = vm.desired_state == VmState::Running;
        // Watching a VM is not using it: a suspended one stays asleep, and
        // the sample does not count for a running one's idle period.
        let (guest, guest_error) = if running && !vm.paused && !vm.suspended {
            let sample = match self.boot.agent(&vm).await {
                Ok(a) => {
                    self.on_agent(&vm.id, a, |a| async move { a.stats().await })
                        .await
                }
                Err(e) => Err(e),
            };
            match sample {
                Ok(g) => (Some(g), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        let pid = tokio::task::block_in_place(|| self.boot.live_handles(&vm)).map(|h| h.pid);
        let host = tokio::task::block_in_place(|| host_view(vm, pid));
        Ok(VmStats {
            guest,
            guest_error,
            ..host
        })
    }

    /// Where a VM's serial console is written.
    pub fn console_log(&self, vm_ref: &str) -> CoreResult<PathBuf> {
        let vm = self.vms.get(vm_ref)?;
        Ok(BootService::console_log(&vm))
    }
}

/// How an agent failure reads to an API client: an agent too old for the
/// request, or a request the guest refused (nothing listens there, no such
/// file), is a conflict with the VM's state; the rest is internal.
pub fn agent_error(vm_ref: &str, e: ClientError) -> CoreError {
    match e {
        ClientError::Unsupported { .. } => CoreError::conflict(format!("vm {vm_ref}: {e}")),
        ClientError::Agent(message) => CoreError::conflict(format!("vm {vm_ref}: {message}")),
        other => CoreError::internal(format!("vm {vm_ref}: guest agent: {other}")),
    }
}

fn host_view(vm: VmRecord, pid: Option<i32>) -> VmStats<GuestStats> {
    use std::os::unix::fs::MetadataExt;
    let sampled_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let vmm = pid.and_then(|pid| {
        let process = procfs::process::Process::new(pid).ok()?;
        let stat = process.stat().ok()?;
        let per_sec = procfs::ticks_per_second();
        let cpu_ms = (stat.utime + stat.stime) * 1000 / per_sec.max(1);
        let rss_kib = process.status().ok()?.vmrss?;
        Some(VmmUsage {
            pid,
            cpu_ms,
            rss_bytes: rss_kib * 1024,
        })
    });
    let disk_files = [("overlay", &vm.overlay_disk), ("work", &vm.work_disk)]
        .into_iter()
        .filter_map(|(role, path)| {
            let m = std::fs::metadata(path).ok()?;
            Some(DiskFile {
                role: role.into(),
                path: path.clone(),
                size_bytes: m.len(),
                allocated_bytes: m.blocks() * 512,
            })
        })
        .collect();
    let net = banger_net::TapName::for_vm(&vm.id)
        .ok()
        .and_then(|tap| tap_counters(tap.as_str()));
    VmStats {
        state: vm.state_label().into(),
        id: vm.id,
        name: vm.name,
        sampled_at_ms,
        guest: None,
        guest_error: None,
        vmm,
        disk_files,
        net,
    }
}

/// Bytes the VM with id `id` has sent through its tap so far: the idle
/// monitor's view of its network use. Sent, not received: a guest answers
/// whoever talks to it (a connection, a ping, an ARP request for it), while
/// the bridge's own multicast chatter (IPv6 router solicitations, MLD),
/// which reaches every port, goes unanswered and must not keep it awake.
pub(crate) fn tap_bytes(id: &str) -> Option<u64> {
    let tap = banger_net::TapName::for_vm(id).ok()?;
    Some(tap_counters(tap.as_str())?.tx_bytes)
}

/// The tap's counters from `/proc/self/net/dev` (this process's network
/// namespace, where the daemon made the tap), swapped to the guest's view.
fn tap_counters(tap: &str) -> Option<NetUsage> {
    let dev = procfs::net::dev_status().ok()?;
    let d = dev.get(tap)?;
    Some(NetUsage {
        interface: tap.into(),
        rx_bytes: d.sent_bytes,
        tx_bytes: d.recv_bytes,
    })
}
