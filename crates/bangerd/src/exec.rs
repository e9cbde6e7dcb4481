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
//!
//! Flow control: output reaches the client only as fast as it reads (the
//! agent stream's window stops the guest process otherwise); stdin keeps
//! to a window the daemon grants with `credit` frames as the agent takes
//! the bytes, so control frames behind it are never held up.

use std::sync::Arc;

use axum::extract::Request;
use banger_api::endpoints::VmsExec;
use banger_api::{ApiError, EXEC_PROTOCOL, ExecQuery};
use banger_core::Services;
use banger_proto::client::{AgentClient, ClientError, DataRx, read_frame_async, write_frame_async};
use banger_proto::flow::INITIAL_WINDOW;
use banger_proto::{ExitStatus, Frame, FrameKind, Message};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use crate::reply::{Failure, Reply};
use crate::routes::Call;
use crate::state::State;
use crate::stream::{switching, wants_upgrade};
/// The stream id of the (single) exec of a session.
const STREAM: u32 = 1;
/// What a hung-up client means to the process: its terminal went away.
const SIGHUP: i32 = 1;
/// Frames queued for the client's connection. The writer sends as fast as
/// the client reads; forwarders wait when this is full, and stop taking
/// the agent's output, which stops the agent through its window.
const OUT_QUEUE: usize = 8;

pub(crate) async fn vms_exec(s: State, c: Call<VmsExec>, mut req: Request) -> Reply {
    let (r, q) = (c.reference(), c.query);
    if !wants_upgrade(req.headers(), EXEC_PROTOCOL) {
        return Err(Failure(ApiError::invalid(format!(
            "exec needs `Connection: Upgrade` and `Upgrade: {EXEC_PROTOCOL}`"
        ))));
    }
    // Refuse before switching protocols, so errors stay plain HTTP; the
    // session then runs on this connection (one store lookup per exec).
    let agent = s.services.agent_of(&r).await.map_err(Failure::from)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let services = s.services.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(services, agent, r, q, TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!(error = %e, "exec upgrade failed"),
        }
    });
    Ok(switching(EXEC_PROTOCOL))
}

async fn relay<S>(
    services: Arc<Services>,
    agent: Arc<AgentClient>,
    vm_ref: String,
    q: ExecQuery,
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
            let _ = send(
                &mut wr,
                Message::Error {
                    message: e.to_string(),
                },
            )
            .await;
            return;
        }
    };
    // A stale agent connection is replaced once.
    let started = services
        .on_agent(&vm_ref, agent, |agent| {
            let req = req.clone();
            async move {
                match agent.exec(req).await {
                    // Not an error of the session: the program is missing
                    // or not executable, and the exec ends as a shell's
                    // would, with the reason on stderr and 127 or 126.
                    Err(ClientError::NotStarted { message, exit_code }) => {
                        Ok(Err((message, exit_code)))
                    }
                    other => other.map(Ok),
                }
            }
        })
        .await;
    let mut handle = match started {
        Ok(Ok(h)) => h,
        Ok(Err((message, code))) => {
            let said = Frame::Data {
                stream: STREAM,
                kind: FrameKind::Stderr,
                data: format!("banger: {message}\n").into_bytes(),
            };
            if write_frame_async(&mut wr, &said).await.is_ok() {
                let _ = send(&mut wr, Message::Exited(ExitStatus::Code { code })).await;
            }
            return;
        }
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
    let (tx, mut rx) = mpsc::channel::<Frame>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame_async(&mut wr, &f).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let _ = tx
        .send(Frame::control(
            STREAM,
            Message::Started { pid: handle.pid() },
        ))
        .await;
    let forward = |rx: Option<DataRx>, kind: FrameKind| {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(mut rx) = rx {
                while let Some(data) = rx.recv().await {
                    let frame = Frame::Data {
                        stream: STREAM,
                        kind,
                        data,
                    };
                    // The client is gone: dropping `rx` discards the rest
                    // without holding the process up.
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        })
    };
    let out = forward(handle.stdout(), FrameKind::Stdout);
    let err = forward(handle.stderr(), FrameKind::Stderr);

    // Client -> agent. Stdin goes through its own task so that signals and
    // resizes are never stuck behind stdin the process does not read: the
    // client keeps to a window that we credit as the agent takes the bytes
    // (a client that does not is slowed by the semaphore instead).
    let control = handle.control();
    let window = Arc::new(Semaphore::new(INITIAL_WINDOW as usize));
    let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let stdin = {
        let (control, window, tx) = (control.clone(), window.clone(), tx.clone());
        tokio::spawn(async move {
            while let Some(Some(data)) = stdin_rx.recv().await {
                let n = data.len();
                if control.write_stdin(&data).await.is_err() {
                    return;
                }
                window.add_permits(n);
                let bytes = u32::try_from(n).unwrap_or(u32::MAX);
                let _ = tx
                    .send(Frame::control(STREAM, Message::Credit { bytes }))
                    .await;
            }
            let _ = control.close_stdin();
        })
    };
    let input = tokio::spawn(async move {
        loop {
            match read_frame_async(&mut rd).await {
                Ok(Some(Frame::Data {
                    kind: FrameKind::Stdin,
                    data,
                    ..
                })) => {
                    let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    match window.acquire_many(n).await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                    let _ = stdin_tx.send(Some(data));
                }
                Ok(Some(Frame::Control { message, .. })) => {
                    let _ = match message {
                        Message::StdinClose => {
                            let _ = stdin_tx.send(None);
                            Ok(())
                        }
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
    // Nothing the client sends matters once the process is gone; in
    // particular its hang-up must not become a SIGHUP sent to the agent
    // for a stream that has ended.
    input.abort();
    // All output is delivered before the exit status (the agent's order).
    let _ = out.await;
    let _ = err.await;
    let last = match status {
        Ok(st) => Message::Exited(st),
        Err(e) => Message::Error {
            message: format!("lost the guest agent: {e}"),
        },
    };
    let _ = tx.send(Frame::control(STREAM, last)).await;
    drop(tx);
    stdin.abort();
    let _ = writer.await;
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, message: Message) -> std::io::Result<()> {
    write_frame_async(w, &Frame::control(STREAM, message))
        .await
        .map_err(std::io::Error::other)?;
    w.shutdown().await
}
