//! `POST /v1/vms/{ref}/exec`: an exec session relayed between a client and
//! the guest agent.
//!
//! The client asks for `Connection: Upgrade` / `Upgrade: banger-exec/1`; once
//! the daemon has checked the VM runs and its agent answers, it switches
//! protocols and the connection carries banger-proto frames, the same ones
//! the agent speaks, all on stream 1: the client sends `exec` first, then
//! stdin data, `stdin_close`, `resize` and `signal`; the daemon sends
//! `started`, stdout/stderr data and finally `exited` or `error`. The daemon
//! multiplexes every session onto its one connection to the agent. With
//! `?image_config=true` ([`banger_api::ExecQuery`]) the exec is first
//! rewritten by the image's config (`banger_core::run_rules`), as `vm run`
//! wants.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::Response;
use banger_api::{ApiError, ExecQuery};
use banger_core::Services;
use banger_proto::client::{AgentClient, ClientError, read_frame_async, write_frame_async};
use banger_proto::{Frame, FrameKind, Message};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::api::{Failure, Reply, State};
use crate::extract::{QueryOf, Reference};

/// The protocol name in the `Upgrade` header.
pub const EXEC_PROTOCOL: &str = "banger-exec/1";
/// The stream id of the (single) exec of a session.
const STREAM: u32 = 1;
/// What a hung-up client means to the process: its terminal went away.
const SIGHUP: i32 = 1;

#[utoipa::path(
    post,
    path = "/v1/vms/{reference}/exec",
    tag = "vms",
    summary = "Run a command in a running VM (an upgraded connection)",
    description = "Needs `Connection: Upgrade` and `Upgrade: banger-exec/1`; after `101` the \
        connection carries banger-proto frames (see the module docs of bangerd's exec.rs).",
    params(("reference" = String, Path, description = "vm name or id, or an unambiguous prefix of one"), ExecQuery),
    responses(
        (status = 101, description = "switched to banger-exec/1"),
        crate::openapi::ApiErrors
    )
)]
pub async fn vms_exec(
    AxState(s): AxState<State>,
    Reference(r): Reference,
    QueryOf(q): QueryOf<ExecQuery>,
    mut req: Request,
) -> Reply {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(EXEC_PROTOCOL));
    if !wants {
        return Err(Failure(ApiError::invalid(format!(
            "exec needs `Connection: Upgrade` and `Upgrade: {EXEC_PROTOCOL}`"
        ))));
    }
    // Refuse before switching protocols, so errors stay plain HTTP.
    let agent = s.services.agent_of(&r).await.map_err(Failure)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let services = s.services.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(services, r, q, agent, TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!(error = %e, "exec upgrade failed"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, EXEC_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

async fn relay<S>(
    services: Arc<Services>,
    vm_ref: String,
    q: ExecQuery,
    agent: Arc<AgentClient>,
    io: S,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let req = match read_frame_async(&mut rd).await {
        Ok(Some(Frame::Control {
            message: Message::Exec(req),
            ..
        })) => req,
        other => {
            let why = match other {
                Err(e) => format!("bad exec session: {e}"),
                _ => "an exec session must begin with an exec message".to_string(),
            };
            let _ = send(&mut wr, Message::Error { message: why }).await;
            return;
        }
    };
    // Docker's run rules, when asked for, are the daemon's (banger-core's
    // `run_rules`), so every client gets the same command.
    let req = match services.exec_request(&vm_ref, req, q.image_config) {
        Ok(req) => req,
        Err(e) => {
            let _ = send(&mut wr, Message::Error { message: e.message }).await;
            return;
        }
    };
    // The cached connection may have gone stale (the guest agent restarted):
    // forget it and try once more on a fresh one.
    let first = agent.exec(req.clone()).await;
    let retried = match first {
        Err(ClientError::Closed | ClientError::Io { .. }) => {
            services.forget_agent(&vm_ref).await;
            match services.agent_of(&vm_ref).await {
                Ok(fresh) => fresh.exec(req).await,
                Err(e) => {
                    let _ = send(&mut wr, Message::Error { message: e.message }).await;
                    return;
                }
            }
        }
        other => other,
    };
    let mut handle = match retried {
        Ok(h) => h,
        Err(e) => {
            let _ = send(
                &mut wr,
                Message::Error {
                    message: format!("exec failed: {e}"),
                },
            )
            .await;
            return;
        }
    };

    // One writer owns the client connection; output forwarders feed it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame_async(&mut wr, &f).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let _ = tx.send(Frame::control(
        STREAM,
        Message::Started { pid: handle.pid() },
    ));
    let forward = |rx: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>>, kind: FrameKind| {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(mut rx) = rx {
                while let Some(data) = rx.recv().await {
                    let _ = tx.send(Frame::Data {
                        stream: STREAM,
                        kind,
                        data,
                    });
                }
            }
        })
    };
    let out = forward(handle.stdout(), FrameKind::Stdout);
    let err = forward(handle.stderr(), FrameKind::Stderr);

    // Client -> agent, until the client closes its side.
    let control = handle.control();
    let input = tokio::spawn(async move {
        loop {
            match read_frame_async(&mut rd).await {
                Ok(Some(Frame::Data {
                    kind: FrameKind::Stdin,
                    data,
                    ..
                })) => {
                    let _ = control.write_stdin(&data);
                }
                Ok(Some(Frame::Control { message, .. })) => {
                    let _ = match message {
                        Message::StdinClose => control.close_stdin(),
                        Message::Resize(size) => control.resize(size),
                        Message::Signal { signal } => control.signal(signal),
                        _ => Ok(()),
                    };
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    // The client hung up before the process ended.
                    let _ = control.signal(SIGHUP);
                    break;
                }
            }
        }
    });

    let status = handle.wait().await;
    // All output is delivered before the exit status (the agent's order).
    let _ = out.await;
    let _ = err.await;
    let last = match status {
        Ok(st) => Message::Exited(st),
        Err(e) => Message::Error {
            message: format!("lost the guest agent: {e}"),
        },
    };
    let _ = tx.send(Frame::control(STREAM, last));
    drop(tx);
    let _ = writer.await;
    input.abort();
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, message: Message) -> std::io::Result<()> {
    write_frame_async(w, &Frame::control(STREAM, message))
        .await
        .map_err(std::io::Error::other)?;
    w.shutdown().await
}
