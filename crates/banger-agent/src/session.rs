//! Serves the protocol on one connection until the host goes away.

use std::io::Read;
use std::sync::Arc;

use banger_proto::{CONTROL_STREAM, Frame, FrameKind, Message, PROTOCOL_VERSION, read_frame};

use crate::exec::{self, ExecTable};
use crate::reaper::Reaper;
use crate::shutdown;
use crate::transport::Sink;

/// Agent-wide context shared by all sessions.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub reaper: Reaper,
    /// Whether the agent is PID 1 (decides how shutdown works).
    pub pid1: bool,
}

/// Serves frames from `reader` until EOF or a framing error; then kills the
/// session's remaining execs, since nobody can see their output any more.
pub fn serve(mut reader: impl Read, sink: Arc<Sink>, ctx: &Ctx) {
    let table: ExecTable = Default::default();
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // Well framed but not a message we know (a newer host): say so
            // on its stream and keep serving.
            Err(banger_proto::FrameError::Decode { stream, source }) => {
                reply(
                    &sink,
                    stream,
                    Message::Error {
                        message: format!("unsupported message: {source}"),
                    },
                );
                continue;
            }
            Err(e) => {
                crate::log(&format!("session ends: {e}"));
                break;
            }
        };
        handle(frame, &sink, &table, ctx);
    }
    sink.kill();
    for (_, ctl) in table.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        // The exec runs in its own session, so its pid is its process group.
        let _ = crate::sys::kill(-ctl.pid, libc::SIGKILL);
    }
}

fn reply(sink: &Sink, stream: u32, message: Message) {
    let _ = sink.send(&Frame::control(stream, message));
}

fn handle(frame: Frame, sink: &Arc<Sink>, table: &ExecTable, ctx: &Ctx) {
    match frame {
        Frame::Control {
            stream: CONTROL_STREAM,
            message,
        } => match message {
            Message::Hello { .. } => reply(
                sink,
                CONTROL_STREAM,
                Message::Ready {
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    protocol_version: PROTOCOL_VERSION,
                },
            ),
            Message::Ping { nonce } => reply(sink, CONTROL_STREAM, Message::Pong { nonce }),
            Message::Shutdown { reboot } => {
                reply(sink, CONTROL_STREAM, Message::ShutdownAck);
                shutdown::run(reboot, ctx.pid1);
            }
            other => reply(
                sink,
                CONTROL_STREAM,
                Message::Error {
                    message: format!("unexpected on stream 0: {other:?}"),
                },
            ),
        },
        Frame::Control { stream, message } => {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            match message {
                Message::Exec(req) => {
                    if t.contains_key(&stream) {
                        drop(t);
                        return reply(
                            sink,
                            stream,
                            Message::Error {
                                message: format!("stream {stream} is in use"),
                            },
                        );
                    }
                    drop(t);
                    let (sink, reaper, table) = (sink.clone(), ctx.reaper.clone(), table.clone());
                    std::thread::spawn(move || exec::run(stream, req, sink, reaper, table));
                }
                Message::StdinClose => {
                    if let Some(tx) = t.get_mut(&stream).and_then(|c| c.stdin.take()) {
                        let _ = tx.send(None);
                    }
                }
                Message::Resize(size) => {
                    if let Some(pty) = t.get(&stream).and_then(|c| c.pty.as_ref()) {
                        exec::resize(pty, size);
                    }
                }
                Message::Signal { signal } => {
                    if let Some(c) = t.get(&stream) {
                        let _ = crate::sys::kill(c.pid, signal);
                    }
                }
                other => {
                    drop(t);
                    reply(
                        sink,
                        stream,
                        Message::Error {
                            message: format!("unexpected message {other:?}"),
                        },
                    );
                }
            }
        }
        Frame::Data {
            stream,
            kind: FrameKind::Stdin,
            data,
        } => {
            let t = table.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = t.get(&stream).and_then(|c| c.stdin.as_ref()) {
                let _ = tx.send(Some(data));
            }
        }
        // The host never sends stdout/stderr; ignore rather than end the
        // session over it.
        Frame::Data { .. } => {}
    }
}
