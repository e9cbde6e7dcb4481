//! The routes that tie a VM to images beyond its create: `POST
//! /v1/images/commit` (a new image from a running VM) and `POST
//! /v1/vms/{ref}/rebase` (a stopped VM moved onto another image). Each is
//! one call on `Services`, streamed as NDJSON events when asked.

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
#[allow(unused_imports)] // some are named only in the OpenAPI annotations
use banger_api::{Event, ImageCommitRequest, ImageRecord, VmRebaseRequest, VmRecord};

use crate::api::{Reply, State, long_async, parse};
use crate::extract::Reference;
use crate::openapi::ApiErrors;

#[utoipa::path(
    post,
    path = "/v1/images/commit",
    tag = "images",
    summary = "Make an image from a running VM's files",
    description = "The VM's root filesystem (its image with its overlay) and its work disk (`/root`, the new image's work seed), read through the guest agent while the VM runs (it is not paused). Runtime directories and the files banger writes per VM are left out; the image's run configuration is the parent's. A stopped or paused VM is refused (409).",
    request_body(content = ImageCommitRequest, content_type = "application/json"),
    responses((status = 200, description = "the new image; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((ImageRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
pub(crate) async fn images_commit(
    AxState(s): AxState<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let req: ImageCommitRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.commit_image(&req, &sink).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/rebase",
    tag = "vms",
    summary = "Move a stopped VM onto another image",
    description = "Keeps the VM's work disk, name, address, MAC, CID, spec and SSH host key; its overlay disk is built anew over the image's base, so changes outside `/root` are dropped. Refused (409) while the VM runs or when the image or the VM's kernel cannot boot it.",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmRebaseRequest, content_type = "application/json"),
    responses((status = 200, description = "the rebased VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((VmRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
pub(crate) async fn vms_rebase(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let req: VmRebaseRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.rebase_vm(&r, &req, &sink).await
    })
    .await
}
