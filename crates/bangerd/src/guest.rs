//! Guest requests that answer plain JSON through the agent:
//! `GET /v1/vms/{ref}/ports` and `GET /v1/vms/{ref}/stats`; and the one
//! way every guest route reaches the agent ([`with_agent`]).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State as AxState;
use banger_api::ApiError;
use banger_core::Services;
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
    summary = "The guest's resource usage (asked of its agent)",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses(
        (status = 200, body = banger_proto::GuestStats, description = "uptime, memory, CPU time and disk usage inside the guest"),
        crate::openapi::ApiErrors
    )
)]
pub async fn vms_stats(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    let stats = with_agent(&s.services, &r, |a| async move { a.stats().await })
        .await
        .map_err(Failure::from)?;
    ok(&stats)
}
