//! The HTTP surface: each route turns a request into one call on
//! [`Services`] and its result into JSON. No decisions are made here.
//!
//! Long operations (imports, creates) stream NDJSON [`Event`]s when the
//! client sends `Accept: application/x-ndjson`; otherwise they run to the
//! end and answer plain JSON, which keeps `curl --unix-socket` usable.
//! Service calls run on blocking threads: they spawn tools and touch SQLite.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use crate::openapi::ApiErrors;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;

use crate::extract::{QueryOf, Reference};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
#[allow(unused_imports)] // some are named only in the OpenAPI annotations
use banger_api::{
    API_VERSION, ApiError, ConfigReply, DaemonInfo, DaemonStopReply, ErrorBody, Event,
    ImageImportRequest, ImagePullRequest, ImageRecord, KernelImportRequest, KernelRecord, NDJSON,
    PruneReport, StartReport, VmCreateRequest, VmRecord, VmRmQuery, VmSetRequest, VmStartRequest,
    VmStopRequest,
};
use banger_core::{CoreError, EventSink, Services};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct State {
    pub(crate) services: Arc<Services>,
    info: Arc<DaemonInfo>,
    stop: Arc<Notify>,
}

impl State {
    pub fn new(services: Arc<Services>, socket: PathBuf) -> Self {
        let info = DaemonInfo {
            api_version: API_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            socket: socket.display().to_string(),
            data_dir: services.layout.data_dir.display().to_string(),
            started_at: banger_core::now_rfc3339(),
        };
        Self {
            services,
            info: Arc::new(info),
            stop: Arc::new(Notify::new()),
        }
    }

    pub fn stop_signal(&self) -> Arc<Notify> {
        self.stop.clone()
    }
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/daemon/stop", post(stop))
        .route("/v1/config", get(config))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/kernels", get(kernels_list).post(kernels_import))
        .route("/v1/kernels/catalog", get(kernels_catalog))
        .route("/v1/kernels/pull", post(kernels_pull))
        .route(
            "/v1/kernels/{reference}",
            get(kernels_show).delete(kernels_rm),
        )
        .route("/v1/kernels/{reference}/default", post(kernels_default))
        .route("/v1/images", get(images_list).post(images_import))
        .route("/v1/images/pull", post(images_pull))
        .route("/v1/images/prune", post(images_prune))
        .route("/v1/images/commit", post(crate::lineage::images_commit))
        .route("/v1/images/{reference}", get(images_show).delete(images_rm))
        .route("/v1/vms", get(vms_list).post(vms_create))
        .route(
            "/v1/vms/{reference}",
            get(vms_show).patch(vms_set).delete(vms_rm),
        )
        .route("/v1/vms/{reference}/start", post(vms_start))
        .route("/v1/vms/{reference}/stop", post(vms_stop))
        .route("/v1/vms/{reference}/restart", post(vms_restart))
        .route("/v1/vms/{reference}/kill", post(vms_kill))
        .route("/v1/vms/{reference}/pause", post(vms_pause))
        .route("/v1/vms/{reference}/resume", post(vms_resume))
        .route(
            "/v1/vms/{reference}/rebase",
            post(crate::lineage::vms_rebase),
        )
        .route("/v1/vms/{reference}/logs", get(vms_logs))
        .route("/v1/vms/{reference}/exec", post(crate::exec::vms_exec))
        .route("/v1/vms/{reference}/tcp", post(crate::stream::vms_tcp))
        .route(
            "/v1/vms/{reference}/files",
            get(crate::stream::vms_copy_out).put(crate::stream::vms_copy_in),
        )
        .route("/v1/vms/{reference}/ports", get(crate::guest::vms_ports))
        .route("/v1/vms/{reference}/stats", get(crate::guest::vms_stats))
        .merge(crate::snapshots::routes())
        .fallback(not_found)
        .with_state(state)
}

/// An [`ApiError`] as a response with the status its code implies. A
/// [`CoreError`] becomes one through banger-core's `From` impl, the one
/// place the services' errors get their wire code.
pub(crate) struct Failure(pub(crate) ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &ErrorBody { error: self.0 })
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(crate) type Reply = Result<Response, Failure>;

pub(crate) fn ok<T: Serialize>(value: &T) -> Reply {
    Ok(json_response(StatusCode::OK, value))
}

/// Parse a body ourselves so malformed JSON gets our error body, with serde's
/// message (which names the bad field), instead of axum's plain text.
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Failure(ApiError::invalid(format!("invalid request body: {e}"))))
}

/// Run a short service call on a blocking thread.
async fn blocking<T, E, F>(f: F) -> Reply
where
    T: Serialize + Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => ok(&v),
        Ok(Err(e)) => Err(Failure(e.into())),
        Err(e) => Err(Failure(ApiError::internal(format!(
            "operation panicked: {e}"
        )))),
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON))
}

/// Run a long operation: streamed as NDJSON events ending in `result` or
/// `error` when the client asked for a stream, else as one JSON reply. The
/// operation runs to completion even if the client goes away, so a killed
/// CLI never leaves half an object behind.
async fn long_op<T, E, F>(headers: &HeaderMap, f: F) -> Reply
where
    T: Serialize + Send + 'static,
    E: Into<ApiError> + Send + 'static,
    F: FnOnce(EventSink<'_>) -> Result<T, E> + Send + 'static,
{
    if !wants_stream(headers) {
        return blocking(move || f(&|_ev| {})).await;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::task::spawn_blocking(move || {
        let sink = |ev: Event| {
            let _ = tx.send(ev);
        };
        let _ = tx.send(final_event(f(&sink)));
    });
    Ok(ndjson(rx))
}

/// The event that ends a stream: the operation's result or its error.
fn final_event<T: Serialize, E: Into<ApiError>>(outcome: Result<T, E>) -> Event {
    match outcome.map_err(Into::into).and_then(|v| {
        serde_json::to_value(&v)
            .map_err(|e| ApiError::internal(format!("cannot encode result: {e}")))
    }) {
        Ok(value) => Event::Result { value },
        Err(error) => Event::Error { error },
    }
}

async fn not_found() -> Failure {
    Failure(ApiError::not_found("no such route; see docs/api.md"))
}

#[utoipa::path(
    get,
    path = "/v1/version",
    tag = "daemon",
    summary = "The daemon: API version, pid, socket, data dir",
    responses((status = 200, body = DaemonInfo, description = "who answers"), ApiErrors)
)]
async fn version(AxState(s): AxState<State>) -> Reply {
    ok(&*s.info)
}

#[utoipa::path(
    post,
    path = "/v1/daemon/stop",
    tag = "daemon",
    summary = "Stop the daemon once operations in flight finish",
    responses((status = 200, body = DaemonStopReply, description = "the daemon is stopping"), ApiErrors)
)]
async fn stop(AxState(s): AxState<State>) -> Reply {
    // notify_one stores a permit, so the stop is not lost if the server task
    // has not started waiting yet.
    s.stop.notify_one();
    ok(&DaemonStopReply { stopping: true })
}

#[utoipa::path(
    get,
    path = "/v1/config",
    tag = "daemon",
    summary = "The effective configuration",
    responses((status = 200, body = ConfigReply, description = "the configuration with defaults filled in"), ApiErrors)
)]
async fn config(AxState(s): AxState<State>) -> Reply {
    let c = &*s.services.config;
    ok(&ConfigReply {
        path: banger_core::config::config_path().display().to_string(),
        toml: c.to_toml(),
        config: crate::openapi::effective_config(c),
    })
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "daemon",
    summary = "This document",
    responses((status = 200, body = Object, description = "the OpenAPI 3.1 description of this API"), ApiErrors)
)]
async fn openapi() -> Reply {
    ok(&crate::openapi::document())
}

#[utoipa::path(
    get,
    path = "/v1/kernels",
    tag = "kernels",
    summary = "List kernels",
    responses((status = 200, body = Vec<KernelRecord>, description = "every kernel"), ApiErrors)
)]
async fn kernels_list(AxState(s): AxState<State>) -> Reply {
    blocking(move || s.services.kernels.list()).await
}

#[utoipa::path(
    get,
    path = "/v1/kernels/{reference}",
    tag = "kernels",
    summary = "Show a kernel",
    params(("reference" = String, Path, description = "kernel name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = KernelRecord, description = "the kernel"), ApiErrors)
)]
async fn kernels_show(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    blocking(move || s.services.kernels.get(&r)).await
}

#[utoipa::path(
    delete,
    path = "/v1/kernels/{reference}",
    tag = "kernels",
    summary = "Remove a kernel (refused while a VM uses it)",
    params(("reference" = String, Path, description = "kernel name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = KernelRecord, description = "the removed kernel"), ApiErrors)
)]
async fn kernels_rm(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    blocking(move || s.services.kernels.remove(&r)).await
}

#[utoipa::path(
    post,
    path = "/v1/kernels/{reference}/default",
    tag = "kernels",
    summary = "Make a kernel the default",
    params(("reference" = String, Path, description = "kernel name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = KernelRecord, description = "the new default kernel"), ApiErrors)
)]
async fn kernels_default(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    blocking(move || s.services.kernels.set_default(&r)).await
}

#[utoipa::path(
    post,
    path = "/v1/kernels",
    tag = "kernels",
    summary = "Import a kernel file or a linux-image .deb",
    request_body(content = KernelImportRequest, content_type = "application/json"),
    responses((status = 200, description = "the imported kernel; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((KernelRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn kernels_import(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: KernelImportRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.kernels.import(&req, ev)).await
}

#[utoipa::path(
    get,
    path = "/v1/kernels/catalog",
    tag = "kernels",
    summary = "The kernels `kernel pull` can fetch (shipped entries and config's)",
    responses((status = 200, body = Vec<banger_api::KernelCatalogEntry>, description = "every catalog entry"), ApiErrors)
)]
async fn kernels_catalog(AxState(s): AxState<State>) -> Reply {
    let catalog = banger_core::kernel_pull::catalog(&s.services.config);
    blocking(move || Ok::<_, ApiError>(catalog)).await
}

#[utoipa::path(
    post,
    path = "/v1/kernels/pull",
    tag = "kernels",
    summary = "Download a catalog kernel, verify its SHA-256 and import it",
    request_body(content = banger_api::KernelPullRequest, content_type = "application/json"),
    responses((status = 200, description = "the imported kernel; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((KernelRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn kernels_pull(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: banger_api::KernelPullRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        let services = &s.services;
        services
            .kernels
            .pull(&req, &services.config, &services.layout, &sink)
            .await
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/images",
    tag = "images",
    summary = "List images",
    responses((status = 200, body = Vec<ImageRecord>, description = "every image"), ApiErrors)
)]
async fn images_list(AxState(s): AxState<State>) -> Reply {
    blocking(move || s.services.images.list()).await
}

#[utoipa::path(
    get,
    path = "/v1/images/{reference}",
    tag = "images",
    summary = "Show an image",
    params(("reference" = String, Path, description = "image name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = ImageRecord, description = "the image"), ApiErrors)
)]
async fn images_show(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    blocking(move || s.services.images.get(&r)).await
}

#[utoipa::path(
    delete,
    path = "/v1/images/{reference}",
    tag = "images",
    summary = "Remove an image (refused while a VM uses it)",
    params(("reference" = String, Path, description = "image name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = ImageRecord, description = "the removed image"), ApiErrors)
)]
async fn images_rm(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    blocking(move || s.services.images.remove(&r)).await
}

#[utoipa::path(
    post,
    path = "/v1/images",
    tag = "images",
    summary = "Import a root directory or tarball",
    request_body(content = ImageImportRequest, content_type = "application/json"),
    responses((status = 200, description = "the imported image; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((ImageRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn images_import(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: ImageImportRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.images.import(&req, ev)).await
}

#[utoipa::path(
    post,
    path = "/v1/images/pull",
    tag = "images",
    summary = "Pull an image from an OCI or Docker v2 registry",
    request_body(content = ImagePullRequest, content_type = "application/json"),
    responses((status = 200, description = "the pulled image; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((ImageRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn images_pull(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: ImagePullRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.images.pull(&req, &sink).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/images/prune",
    tag = "images",
    summary = "Free every cache blob no image uses",
    responses((status = 200, body = PruneReport, description = "what was freed"), ApiErrors)
)]
async fn images_prune(AxState(s): AxState<State>) -> Reply {
    s.services
        .images
        .prune()
        .await
        .map_err(Failure::from)
        .and_then(|r| ok(&r))
}

#[utoipa::path(
    get,
    path = "/v1/vms",
    tag = "vms",
    summary = "List VMs",
    responses((status = 200, body = Vec<VmRecord>, description = "every VM"), ApiErrors)
)]
async fn vms_list(AxState(s): AxState<State>) -> Reply {
    s.services
        .list_vms()
        .await
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    get,
    path = "/v1/vms/{reference}",
    tag = "vms",
    summary = "Show a VM",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = VmRecord, description = "the VM"), ApiErrors)
)]
async fn vms_show(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    s.services
        .show_vm(&r)
        .await
        .map_err(Failure::from)
        .and_then(|v| ok(&v))
}

#[utoipa::path(
    delete,
    path = "/v1/vms/{reference}",
    tag = "vms",
    summary = "Remove a VM and its disks",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one"), VmRmQuery),
    responses((status = 200, body = VmRecord, description = "the removed VM"), ApiErrors)
)]
async fn vms_rm(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    QueryOf(q): QueryOf<VmRmQuery>,
) -> Reply {
    match s.services.remove_vm(&r, q.force).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure::from(e)),
    }
}

fn stop_timeout(b: &VmStopRequest) -> std::time::Duration {
    b.timeout_secs
        .map(std::time::Duration::from_secs)
        .unwrap_or(banger_core::boot::DEFAULT_STOP_TIMEOUT)
}

/// Run an async long operation, streaming when asked (see [`long_op`]).
pub(crate) async fn long_async<T, E, F, Fut>(headers: &HeaderMap, f: F) -> Reply
where
    T: Serialize + Send + 'static,
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Event>) -> Fut + Send + 'static,
    E: Into<ApiError> + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let stream = wants_stream(headers);
    // Spawned so the operation completes even when the client goes away.
    let task = tokio::spawn({
        let tx = tx.clone();
        async move { f(tx).await }
    });
    if !stream {
        drop(rx);
        return match task.await {
            Ok(Ok(v)) => ok(&v),
            Ok(Err(e)) => Err(Failure(e.into())),
            Err(e) => Err(Failure(ApiError::internal(format!(
                "operation panicked: {e}"
            )))),
        };
    }
    tokio::spawn(async move {
        let outcome = task
            .await
            .map_err(|e| ApiError::internal(format!("operation panicked: {e}")))
            .and_then(|r| r.map_err(Into::into));
        let _ = tx.send(final_event(outcome));
    });
    Ok(ndjson(rx))
}

fn ndjson(rx: tokio::sync::mpsc::UnboundedReceiver<Event>) -> Response {
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, NDJSON)
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/start",
    tag = "vms",
    summary = "Boot a VM; answers once its agent does",
    description = "Restores a boot template of the VM's machine shape when there is one (a warm start, `warm: true` in the answer), unless `cold`.",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmStartRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, description = "the running VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((StartReport = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn vms_start(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmStartRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.start_vm(&r, b.cold, &sink).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/restart",
    tag = "vms",
    summary = "Stop, then start a VM",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmStopRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, description = "the running VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((StartReport = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn vms_restart(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmStopRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.restart_vm(&r, stop_timeout(&b), &sink).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/stop",
    tag = "vms",
    summary = "Shut a VM down cleanly, killing it after a timeout",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmStopRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, body = VmRecord, description = "the stopped VM"), ApiErrors)
)]
async fn vms_stop(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: VmStopRequest = parse(&body)?;
    long_async(&headers, move |_tx| async move {
        s.services.stop_vm(&r, stop_timeout(&b)).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/kill",
    tag = "vms",
    summary = "Kill the VMM at once",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = VmRecord, description = "the stopped VM"), ApiErrors)
)]
async fn vms_kill(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    match s.services.kill_vm(&r).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure::from(e)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/pause",
    tag = "vms",
    summary = "Stop the VM's vCPUs",
    description = "The VMM keeps running with the guest frozen; `paused` is true in the answer and in `vm show` until resumed. Execs are refused (409) while paused.",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = VmRecord, description = "the paused VM"), ApiErrors)
)]
async fn vms_pause(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    match s.services.pause_vm(&r).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure::from(e)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/resume",
    tag = "vms",
    summary = "Run a paused VM's vCPUs again",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = VmRecord, description = "the running VM"), ApiErrors)
)]
async fn vms_resume(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    match s.services.resume_vm(&r).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure::from(e)),
    }
}

/// The serial console as plain text.
#[utoipa::path(
    get,
    path = "/v1/vms/{reference}/logs",
    tag = "vms",
    summary = "The serial console",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    responses((status = 200, body = String, content_type = "text/plain", description = "the console log"), ApiErrors)
)]
async fn vms_logs(AxState(s): AxState<State>, Reference(r): Reference) -> Reply {
    let vm = tokio::task::spawn_blocking({
        let s = s.clone();
        move || s.services.vms.get(&r)
    })
    .await
    .map_err(|e| Failure(ApiError::internal(e.to_string())))?
    .map_err(Failure::from)?;
    let path = banger_core::boot::BootService::console_log(&vm);
    // Streamed from the file: a console log grows for as long as the VM
    // runs, and the daemon must not hold a whole one in memory.
    let body = match tokio::fs::File::open(&path).await {
        Ok(f) => Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Body::empty(),
        Err(e) => {
            return Err(Failure(ApiError::internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))));
        }
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

#[utoipa::path(
    patch,
    path = "/v1/vms/{reference}",
    tag = "vms",
    summary = "Change a VM's spec",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one")),
    request_body(content = VmSetRequest, content_type = "application/json"),
    responses((status = 200, body = VmRecord, description = "the changed VM"), ApiErrors)
)]
async fn vms_set(AxState(s): AxState<State>, Reference(r): Reference, body: Bytes) -> Reply {
    let req: VmSetRequest = parse(&body)?;
    match s.services.set_vm(&r, &req).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure::from(e)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/vms",
    tag = "vms",
    summary = "Create a VM: name, address, CID and disks",
    request_body(content = VmCreateRequest, content_type = "application/json", description = "JSON; an empty body means all defaults"),
    responses((status = 200, description = "the created VM; with `Accept: application/x-ndjson`, a stream of events ending in `result` (whose value is the same) or `error`", content((VmRecord = "application/json"), (Event = "application/x-ndjson"))), ApiErrors)
)]
async fn vms_create(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: VmCreateRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.create_vm(&req, ev)).await
}
