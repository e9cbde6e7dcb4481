//! Guest requests that answer plain JSON through the agent:
//! `GET /v1/vms/{ref}/ports` and `GET /v1/vms/{ref}/stats` (the guest's
//! report beside the host's view: the VMM process from `/proc`, the disk
//! files, the tap's counters); and the one way every guest route reaches
//! the agent ([`with_agent`]).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State as AxState;
use banger_api::{ApiError, DiskFile, NetUsage, VmStats, VmmUsage};
use banger_core::Services;
use banger_proto::GuestStats;
use banger_proto::client::{AgentClient, ClientError};

use crate::api::{Failure, Reply, State, ok};
use crate::extract::Reference;

/// Runs `op` on the VM's agent connection. The cached connection may have
/// gone stale (the guest agent restarted): on a connection error it is
/// forgotten and `op` runs once more on a fresh one.
pub(crate) async fn with_agent<T, F, Fut>(
    services: &Services,
    vm_ref: &str,
    op: F,
) -> Result<T, ApiError>
where
    F: Fn(Arc<AgentClient>) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let agent = services.agent_of(vm_ref).await?;
    on_agent(services, vm_ref, agent, op).await
}

/// [`with_agent`] on a connection the caller already looked up (an exec
/// checks it before switching protocols), with the same one retry.
pub(crate) async fn on_agent<T, F, Fut>(
    services: &Services,
    vm_ref: &str,
    agent: Arc<AgentClient>,
    op: F,
) -> Result<T, ApiError>
where
    F: Fn(Arc<AgentClient>) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    match op(agent).await {
        Err(ClientError::Closed | ClientError::Io { .. }) => {
            services.forget_agent(vm_ref).await;
            let fresh = services.agent_of(vm_ref).await?;
            op(fresh).await.map_err(|e| agent_error(vm_ref, e))
        }
        other => other.map_err(|e| agent_error(vm_ref, e)),
    }
}

/// How an agent failure reads to an API client: an agent too old for the
/// request, or a request the guest refused (nothing listens there, no such
/// file), is a conflict with the VM's state; the rest is internal.
pub(crate) fn agent_error(vm_ref: &str, e: ClientError) -> ApiError {
    match e {
        ClientError::Unsupported { .. } => ApiError::conflict(format!("vm {vm_ref}: {e}")),
        ClientError::Agent(message) => ApiError::conflict(format!("vm {vm_ref}: {message}")),
        other => ApiError::internal(format!("vm {vm_ref}: guest agent: {other}")),
    }
}

#[utoipa::path(
    get,
    path = "/v1/vms/{reference}/ports",
    tag = "vms",
    summary = "The guest's listening sockets (asked of its agent)",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses(
        (status = 200, body = Vec<banger_proto::ListeningPort>, description = "every listening TCP and UDP socket, with its process when known"),
        crate::openapi::ApiErrors
    )
)]
pub async fn vms_ports(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    let ports = with_agent(&s.services, &r, |a| async move { a.ports().await })
        .await
        .map_err(Failure::from)?;
    ok(&ports)
}

#[utoipa::path(
    get,
    path = "/v1/vms/{reference}/stats",
    tag = "vms",
    summary = "A VM's resource usage, from its agent and from the host",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses(
        (status = 200, body = VmStats<GuestStats>, description = "the guest's own report (uptime, memory, CPU time, disk usage; null with guest_error when its agent does not answer) beside the host's view: the VMM process's CPU time and RSS, the disk files, the tap's counters"),
        crate::openapi::ApiErrors
    )
)]
pub async fn vms_stats(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    let vm = s.services.show_vm(&r).await.map_err(Failure::from)?;
    let running = vm.desired_state == banger_api::VmState::Running;
    let (guest, guest_error) = if running && !vm.paused {
        match with_agent(&s.services, &vm.id, |a| async move { a.stats().await }).await {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, None)
    };
    let services = s.services.clone();
    let host = tokio::task::spawn_blocking(move || {
        let handles = services.boot.live_handles(&vm);
        host_view(vm, handles.map(|h| h.pid))
    })
    .await
    .map_err(|e| Failure(ApiError::internal(format!("stats: {e}"))))?;
    ok(&VmStats {
        guest,
        guest_error,
        ..host
    })
}

/// What the kernel counts `/proc/PID/stat` times in (USER_HZ): 100 on
/// every architecture Linux runs VMs on, whatever `CONFIG_HZ` is.
const USER_HZ: u64 = 100;

fn host_view(vm: banger_api::VmRecord, pid: Option<i32>) -> VmStats<GuestStats> {
    use std::os::unix::fs::MetadataExt;
    let sampled_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let vmm = pid.and_then(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name, which may hold spaces and ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        let cpu_ms = (ticks(11)? + ticks(12)?) * 1000 / USER_HZ;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
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

/// The tap's counters from `/proc/self/net/dev` (this process's network
/// namespace, where the daemon made the tap), swapped to the guest's view.
fn tap_counters(tap: &str) -> Option<NetUsage> {
    let dev = std::fs::read_to_string("/proc/self/net/dev").ok()?;
    let line = dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(tap)?.strip_prefix(':'))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Receive bytes is the first column, transmit bytes the ninth.
    Some(NetUsage {
        interface: tap.into(),
        rx_bytes: *v.get(8)?,
        tx_bytes: *v.first()?,
    })
}
