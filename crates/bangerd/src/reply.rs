//! How a handler answers: a [`Failure`] is an [`ApiError`] with the status
//! its code implies (a [`CoreError`] becomes one through banger-core's
//! `From`, the one place the services' errors get their wire code), JSON
//! answers, long operations as one JSON answer or an NDJSON stream of
//! [`Event`]s, and service calls on blocking threads.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use banger_api::{ApiError, ErrorBody, Event, NDJSON};
use banger_core::CoreError;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

pub(crate) type Reply = Result<Response, Failure>;

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(crate) fn ok<T: Serialize>(value: &T) -> Reply {
    Ok(json_response(StatusCode::OK, value))
}

/// Parse a body ourselves so malformed JSON gets our error body, with serde's
/// message (which names the bad field), instead of axum's plain text. An
/// empty body is `{}`.
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Failure(ApiError::invalid(format!("invalid request body: {e}"))))
}

/// Run a short service call on a blocking thread: they spawn tools and
/// touch SQLite.
pub(crate) async fn blocking<T, E, F>(f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    E: Into<Failure> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(panicked(e)),
    }
}

fn panicked(e: tokio::task::JoinError) -> Failure {
    Failure(ApiError::internal(format!("operation panicked: {e}")))
}

pub(crate) fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON))
}

/// Where a long operation sends its events.
pub(crate) type Events = tokio::sync::mpsc::UnboundedSender<Event>;

/// A long operation's answer: streamed as NDJSON events ending in `result`
/// or `error` when the client asked for a stream, else one JSON reply. The
/// operation is spawned, so it runs to completion even if the client goes
/// away and a killed CLI never leaves half an object behind.
pub(crate) async fn long_op<T, Fut>(stream: bool, f: impl FnOnce(Events) -> Fut) -> Reply
where
    T: Serialize + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Failure>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let task = tokio::spawn(f(tx.clone()));
    if !stream {
        drop(rx);
        return match task.await {
            Ok(Ok(v)) => ok(&v),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(panicked(e)),
        };
    }
    tokio::spawn(async move {
        let outcome = match task.await {
            Ok(r) => r,
            Err(e) => Err(panicked(e)),
        };
        let _ = tx.send(final_event(outcome));
    });
    Ok(ndjson(rx))
}

/// The event that ends a stream: the operation's result or its error.
fn final_event<T: Serialize>(outcome: Result<T, Failure>) -> Event {
    match outcome.map_err(|f| f.0).and_then(|v| {
        serde_json::to_value(&v)
            .map_err(|e| ApiError::internal(format!("cannot encode result: {e}")))
    }) {
        Ok(value) => Event::Result { value },
        Err(error) => Event::Error { error },
    }
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
