//! The routes whose bodies are streams: the console log, and byte streams
//! into the guest through its agent:
//!
//! * `POST /v1/vms/{ref}/tcp?port=P[&host=H]`, upgraded to `banger-tcp/1`:
//!   after `101` the connection *is* the guest TCP connection, both ways,
//!   half-close included (what `vm proxy` and `vm forward` splice).
//! * `PUT /v1/vms/{ref}/files?path=DIR` with a tar body: unpacked under
//!   `DIR` in the guest; answers `{"path", "bytes"}` once it is all there.
//! * `GET /v1/vms/{ref}/files?path=PATH`: a tar of `PATH`, streamed.
//!
//! Nothing is buffered beyond a chunk: each hop reads only after the next
//! one took the previous chunk, and the agent stream's credit window does
//! the rest, so memory stays bounded whatever the size or the client's
//! speed. Errors the agent finds before the first byte (connection
//! refused, no such file) are ordinary error answers.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use banger_api::endpoints::{VmsCopyIn, VmsCopyOut, VmsLogs, VmsTcp};
use banger_api::{ApiError, CopyInReport, TCP_PROTOCOL};
use banger_proto::client::ByteStream;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::reply::{Failure, Reply, ok};
use crate::routes::Call;
use crate::state::State;

/// Whether the request asks to switch to `protocol`.
pub(crate) fn wants_upgrade(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol))
}

/// The `101` answer that switches to `protocol`.
pub(crate) fn switching(protocol: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(crate) async fn vms_tcp(s: State, c: Call<VmsTcp>, mut req: Request) -> Reply {
    let (r, q) = (c.reference(), c.query);
    if !wants_upgrade(req.headers(), TCP_PROTOCOL) {
        return Err(Failure(ApiError::invalid(format!(
            "tcp needs `Connection: Upgrade` and `Upgrade: {TCP_PROTOCOL}`"
        ))));
    }
    // Connected before switching protocols, so a refusal is plain HTTP.
    let stream = s
        .services
        .with_agent(&r, |a| {
            let host = q.host.clone();
            async move { a.tcp_connect(q.port, host).await }
        })
        .await
        .map_err(Failure::from)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => splice(stream, TokioIo::new(upgraded), q.port).await,
            Err(e) => tracing::warn!(error = %e, "tcp upgrade failed"),
        }
    });
    Ok(switching(TCP_PROTOCOL))
}

/// Copies both ways between the client and the guest connection until both
/// directions have ended; each half-closes on its own.
async fn splice<S>(mut stream: ByteStream, io: S, port: u16)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let tx = stream.sender();
    let up = async move {
        let mut buf = vec![0u8; banger_proto::flow::MAX_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return tx.close().is_ok(),
                Ok(n) => {
                    if tx.write(&buf[..n]).await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    };
    let mut from_guest = stream.reader();
    let down = async move {
        if let Some(rx) = from_guest.as_mut() {
            while let Some(data) = rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    return false;
                }
            }
        }
        wr.shutdown().await.is_ok()
    };
    let (up_ok, down_ok) = tokio::join!(up, down);
    if !(up_ok && down_ok) {
        // The client went away: dropping the stream aborts it in the guest.
        return;
    }
    if let Err(e) = stream.finish().await {
        tracing::debug!(port, error = %e, "guest tcp stream ended with an error");
    }
}

pub(crate) async fn vms_copy_in(s: State, c: Call<VmsCopyIn>, req: Request) -> Reply {
    let r = c.reference();
    let dest = c.query.path.clone();
    let body = req.into_body();
    let stream = s
        .services
        .with_agent(&r, |a| {
            let dest = dest.clone();
            async move { a.copy_in(&dest).await }
        })
        .await
        .map_err(Failure::from)?;
    let tx = stream.sender();
    let mut chunks = body.into_data_stream();
    let mut bytes = 0u64;
    let mut client_error = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(data) => {
                bytes += data.len() as u64;
                // Fails once the agent gave up (its error is in `finish`).
                if tx.write(&data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                client_error = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(e) = client_error {
        stream.abort();
        return Err(Failure(ApiError::invalid(format!(
            "copy into {dest}: the request body broke off: {e}"
        ))));
    }
    let _ = tx.close();
    stream
        .finish()
        .await
        .map_err(|e| Failure::from(banger_core::guest::agent_error(&r, e)))?;
    ok(&CopyInReport { path: dest, bytes })
}

pub(crate) async fn vms_copy_out(s: State, c: Call<VmsCopyOut>, _req: Request) -> Reply {
    let r = c.reference();
    let path = c.query.path.clone();
    let mut stream = s
        .services
        .with_agent(&r, |a| {
            let path = path.clone();
            async move { a.copy_out(&path).await }
        })
        .await
        .map_err(Failure::from)?;
    let rx = stream.reader();
    // Chunks as the client takes them; at the end the agent's verdict. A
    // failure mid-way cuts the body short (no terminating chunk), which the
    // client sees as an error; the cause goes to the daemon log.
    let body = futures_util::stream::unfold(
        (rx, Some(stream), r, path),
        |(mut rx, stream, r, path)| async move {
            if let Some(data) = rx.as_mut()?.recv().await {
                return Some((Ok(bytes::Bytes::from(data)), (rx, stream, r, path)));
            }
            let verdict = stream?.finish().await;
            match verdict {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(vm = %r, path = %path, error = %e, "copy out failed mid-stream");
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, None, r, path),
                    ))
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(body))
        .map_err(|e| Failure(ApiError::internal(e.to_string())))
}

/// The serial console as plain text, streamed from the file: a console log
/// grows for as long as the VM runs, and the daemon must not hold a whole
/// one in memory.
pub(crate) async fn vms_logs(s: State, c: Call<VmsLogs>, _req: Request) -> Reply {
    let services = s.services.clone();
    let r = c.reference();
    let path = tokio::task::spawn_blocking(move || services.console_log(&r))
        .await
        .map_err(|e| Failure(ApiError::internal(e.to_string())))??;
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
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .map_err(|e| Failure(ApiError::internal(e.to_string())))
}
