//! Snapshot routes: `POST /v1/vms/{ref}/snapshot`, `POST
//! /v1/vms/{ref}/fork`, and `/v1/snapshots` (list, show, remove,
//! restore), and boot templates, the saved states warm starts restore
//! (`/v1/templates`: `banger warm`). Each is one call on [`banger_core::Services`]; saves and
//! restores stream stage events when asked, like a start.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::routing::{get, post};
#[allow(unused_imports)] // some are named only in the OpenAPI annotations
use banger_api::{
    Event, SnapshotRecord, StartReport, TemplateInfo, VmForkRequest, VmRestoreRequest,
    VmSnapshotRequest, WarmRequest,
};

use crate::api::{Failure, Reply, State, long_async, ok, parse};
use crate::extract::Reference;
use crate::openapi::ApiErrors;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/v1/vms/{reference}/snapshot", post(vms_snapshot))
        .route("/v1/vms/{reference}/fork", post(vms_fork))
        .route("/v1/snapshots", get(snapshots_list))
        .route(
            "/v1/snapshots/{reference}",
            get(snapshots_show).delete(snapshots_rm),
        )
        .route("/v1/snapshots/{reference}/restore", post(snapshots_restore))
        .route("/v1/templates", get(templates_list).post(templates_make))
}

#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "snapshots",
    summary = "List boot templates",
    responses((status = 200, body = Vec<TemplateInfo>, description = "every boot template"), ApiErrors)
)]
pub(crate) async fn templates_list(AxState(s): AxState<State>) -> Reply {
    ok(&tokio::task::block_in_place(|| s.services.templates()))
}

#[utoipa::path(
    post,
    path = "/v1/templates",
    tag = "snapshots",
    summary = "Make the boot template warm starts of a machine shape restore (`banger warm`)",
    description = "Boots a guest of the kernel to its agent's wait in the initramfs and saves it; answers the existing template when there is one. Refused (400) when the VMM or kernel cannot have templates (Firecracker; a kernel with its disk driver built in).",
    request_body(content = WarmRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, body = TemplateInfo, description = "the template"), ApiErrors)
)]
pub(crate) async fn templates_make(AxState(s): AxState<State>, body: Bytes) -> Reply {
    let b: WarmRequest = parse(&body)?;
    s.services
        .warm(&b)
        .await
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/snapshot",
    tag = "snapshots",
    summary = "Save a running VM's memory, devices and disks as a snapshot",
    description = "The VM is paused while its state is written and its disks copied, then runs again (unless `keep_paused`). A stopped VM is refused (409): a snapshot holds a running guest.",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmSnapshotRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, description = "the snapshot; with `Accept: application/x-ndjson`, a stream of events ending in `result` or `error`", content((SnapshotRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
pub(crate) async fn vms_snapshot(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmSnapshotRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.snapshot_vm(&r, &b, &sink).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/fork",
    tag = "snapshots",
    summary = "Fork a running VM into a new one (new name, IP, MAC, CID, host key)",
    description = "The source pauses while it is saved and runs on; the new VM continues from that instant with its own identity and copies of the disks.",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmForkRequest, content_type = "application/json"),
    responses((status = 200, description = "the new running VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` or `error`", content((StartReport = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
pub(crate) async fn vms_fork(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmForkRequest = if body.is_empty() {
        return Err(Failure(banger_api::ApiError::invalid(
            "invalid request body: missing field `name`",
        )));
    } else {
        parse(&body)?
    };
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.fork_vm(&r, &b, &sink).await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/snapshots",
    tag = "snapshots",
    summary = "List snapshots",
    responses((status = 200, body = Vec<SnapshotRecord>, description = "every snapshot"), ApiErrors)
)]
pub(crate) async fn snapshots_list(AxState(s): AxState<State>) -> Reply {
    tokio::task::block_in_place(|| s.services.list_snapshots())
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    get,
    path = "/v1/snapshots/{reference}",
    tag = "snapshots",
    summary = "Show a snapshot",
    params(("reference" = String, Path, description = "snapshot name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = SnapshotRecord, description = "the snapshot"), ApiErrors)
)]
pub(crate) async fn snapshots_show(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    tokio::task::block_in_place(|| s.services.show_snapshot(&r))
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    delete,
    path = "/v1/snapshots/{reference}",
    tag = "snapshots",
    summary = "Remove a snapshot and its files",
    description = "Refused (409) while a restore reads it.",
    params(("reference" = String, Path, description = "snapshot name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = SnapshotRecord, description = "the removed snapshot"), ApiErrors)
)]
pub(crate) async fn snapshots_rm(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    s.services
        .remove_snapshot(&r)
        .await
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    post,
    path = "/v1/snapshots/{reference}/restore",
    tag = "snapshots",
    summary = "Run a VM from a snapshot",
    description = "Without `name`: the snapshot's source VM, which must be stopped, gets the saved disks and state back. With `name`: a new VM (new IP, MAC, CID and host key). Refused when the snapshot's kernel, image or guest agent is gone or changed.",
    params(("reference" = String, Path, description = "snapshot name or id, or an unambiguous prefix of one")),
    request_body(content = VmRestoreRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, description = "the running VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` or `error`", content((StartReport = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
pub(crate) async fn snapshots_restore(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmRestoreRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.restore_snapshot(&r, &b, &sink).await
    })
    .await
}
