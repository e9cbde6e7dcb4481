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

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use banger_api::{
    API_VERSION, ApiError, DaemonInfo, ErrorBody, Event, ImageImportRequest, KernelImportRequest,
    NDJSON, VmCreateRequest, VmSetRequest,
};
use banger_core::{EventSink, Services};
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
        .route("/v1/kernels", get(kernels_list).post(kernels_import))
        .route(
            "/v1/kernels/{reference}",
            get(kernels_show).delete(kernels_rm),
        )
        .route("/v1/kernels/{reference}/default", post(kernels_default))
        .route("/v1/images", get(images_list).post(images_import))
        .route("/v1/images/pull", post(images_pull))
        .route("/v1/images/prune", post(images_prune))
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
        .route("/v1/vms/{reference}/logs", get(vms_logs))
        .route("/v1/vms/{reference}/exec", post(crate::exec::vms_exec))
        .route("/v1/vms/{reference}/tcp", post(crate::stream::vms_tcp))
        .route(
            "/v1/vms/{reference}/files",
            get(crate::stream::vms_copy_out).put(crate::stream::vms_copy_in),
        )
        .route("/v1/vms/{reference}/ports", get(crate::guest::vms_ports))
        .route("/v1/vms/{reference}/stats", get(crate::guest::vms_stats))
        .fallback(not_found)
        .with_state(state)
}

/// An [`ApiError`] as a response with the status its code implies.
pub(crate) struct Failure(pub(crate) ApiError);

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
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Failure(ApiError::invalid(format!("invalid request body: {e}"))))
}

/// Run a short service call on a blocking thread.
async fn blocking<T, F>(f: F) -> Reply
where
    T: Serialize + Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => ok(&v),
        Ok(Err(e)) => Err(Failure(e)),
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
async fn long_op<T, F>(headers: &HeaderMap, f: F) -> Reply
where
    T: Serialize + Send + 'static,
    F: FnOnce(EventSink<'_>) -> Result<T, ApiError> + Send + 'static,
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
fn final_event<T: Serialize>(outcome: Result<T, ApiError>) -> Event {
    match outcome.and_then(|v| {
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

async fn version(AxState(s): AxState<State>) -> Reply {
    ok(&*s.info)
}

async fn stop(AxState(s): AxState<State>) -> Reply {
    // notify_one stores a permit, so the stop is not lost if the server task
    // has not started waiting yet.
    s.stop.notify_one();
    ok(&serde_json::json!({"stopping": true}))
}

async fn config(AxState(s): AxState<State>) -> Reply {
    ok(&serde_json::json!({
        "path": banger_core::config::config_path().display().to_string(),
        "toml": s.services.config.to_toml(),
        "config": &*s.services.config,
    }))
}

async fn kernels_list(AxState(s): AxState<State>) -> Reply {
    blocking(move || s.services.kernels.list()).await
}

async fn kernels_show(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    blocking(move || s.services.kernels.get(&r)).await
}

async fn kernels_rm(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    blocking(move || s.services.kernels.remove(&r)).await
}

async fn kernels_default(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    blocking(move || s.services.kernels.set_default(&r)).await
}

async fn kernels_import(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: KernelImportRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.kernels.import(&req, ev)).await
}

async fn images_list(AxState(s): AxState<State>) -> Reply {
    blocking(move || s.services.images.list()).await
}

async fn images_show(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    blocking(move || s.services.images.get(&r)).await
}

async fn images_rm(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    blocking(move || s.services.images.remove(&r)).await
}

async fn images_import(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: ImageImportRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.images.import(&req, ev)).await
}

async fn images_pull(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: banger_api::ImagePullRequest = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.images.pull(&req, &sink).await
    })
    .await
}

async fn images_prune(AxState(s): AxState<State>) -> Reply {
    s.services
        .images
        .prune()
        .await
        .map_err(Failure)
        .and_then(|r| ok(&r))
}

async fn vms_list(AxState(s): AxState<State>) -> Reply {
    s.services
        .list_vms()
        .await
        .map_err(Failure)
        .and_then(|v| ok(&v))
}

async fn vms_show(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    s.services
        .show_vm(&r)
        .await
        .map_err(Failure)
        .and_then(|v| ok(&v))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RmQuery {
    #[serde(default)]
    force: bool,
}

async fn vms_rm(
    AxState(s): AxState<State>,
    Path(r): Path<String>,
    Query(q): Query<RmQuery>,
) -> Reply {
    match s.services.remove_vm(&r, q.force).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure(e)),
    }
}

/// Body of `stop` and `restart`: seconds to wait for a clean shutdown
/// before the VMM is killed.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct StopBody {
    timeout_secs: Option<u64>,
}

fn stop_timeout(b: &StopBody) -> std::time::Duration {
    b.timeout_secs
        .map(std::time::Duration::from_secs)
        .unwrap_or(banger_core::boot::DEFAULT_STOP_TIMEOUT)
}

/// Run an async long operation, streaming when asked (see [`long_op`]).
async fn long_async<T, F, Fut>(headers: &HeaderMap, f: F) -> Reply
where
    T: Serialize + Send + 'static,
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Event>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
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
            Ok(Err(e)) => Err(Failure(e)),
            Err(e) => Err(Failure(ApiError::internal(format!(
                "operation panicked: {e}"
            )))),
        };
    }
    tokio::spawn(async move {
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("operation panicked: {e}"))));
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

async fn vms_start(AxState(s): AxState<State>, Path(r): Path<String>, headers: HeaderMap) -> Reply {
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.start_vm(&r, &sink).await
    })
    .await
}

async fn vms_restart(
    AxState(s): AxState<State>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: StopBody = parse(&body)?;
    long_async(&headers, move |tx| async move {
        let sink = move |ev: Event| {
            let _ = tx.send(ev);
        };
        s.services.restart_vm(&r, stop_timeout(&b), &sink).await
    })
    .await
}

async fn vms_stop(
    AxState(s): AxState<State>,
    Path(r): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let b: StopBody = parse(&body)?;
    long_async(&headers, move |_tx| async move {
        s.services.stop_vm(&r, stop_timeout(&b)).await
    })
    .await
}

async fn vms_kill(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    match s.services.kill_vm(&r).await {
        Ok(vm) => ok(&vm),
        Err(e) => Err(Failure(e)),
    }
}

/// The serial console as plain text.
async fn vms_logs(AxState(s): AxState<State>, Path(r): Path<String>) -> Reply {
    let vm = tokio::task::spawn_blocking({
        let s = s.clone();
        move || s.services.vms.get(&r)
    })
    .await
    .map_err(|e| Failure(ApiError::internal(e.to_string())))?
    .map_err(Failure)?;
    let path = banger_core::boot::BootService::console_log(&vm);
    let text = match tokio::fs::read(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
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
        .body(Body::from(text))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn vms_set(AxState(s): AxState<State>, Path(r): Path<String>, body: Bytes) -> Reply {
    let req: VmSetRequest = parse(&body)?;
    blocking(move || s.services.vms.set(&r, &req)).await
}

async fn vms_create(AxState(s): AxState<State>, headers: HeaderMap, body: Bytes) -> Reply {
    let req: VmCreateRequest = parse(&body)?;
    long_op(&headers, move |ev| s.services.create_vm(&req, ev)).await
}
