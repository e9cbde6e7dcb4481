//! Serves the protocol on one connection until the host goes away.
//!
//! This thread only reads frames and routes them: every stream runs on its
//! own worker thread, and inbound data is queued for its worker (at most a
//! window, see [`crate::flow`]), so one slow stream never holds up another.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc;

use banger_proto::{CONTROL_STREAM, Frame, FrameKind, Message, PROTOCOL_VERSION, caps, read_frame};

use crate::exec;
use crate::flow::Flow;
use crate::reaper::Reaper;
use crate::shutdown;
use crate::streams::{self, StreamCtl, Table, reply};
use crate::transport::Sink;

/// Agent-wide context shared by all sessions.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub reaper: Reaper,
    /// Whether the agent is PID 1 (decides how shutdown works).
    pub pid1: bool,
}

/// One connection's state.
struct Session<'a> {
    sink: Arc<Sink>,
    table: Table,
    ctx: &'a Ctx,
    /// The host listed `flow_control` in its hello.
    flow_control: bool,
    /// The host listed `exec_not_started`: a program that cannot start is
    /// `not_started` with the shell's exit code, not an `error`.
    not_started: bool,
}

/// Serves frames from `reader` until EOF or a framing error; then stops the
/// session's remaining streams, since nobody can see their output any more.
pub fn serve(mut reader: impl Read, sink: Arc<Sink>, ctx: &Ctx) {
    let mut s = Session {
        sink,
        table: Table::default(),
        ctx,
        flow_control: false,
        not_started: false,
    };
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // Well framed but not a message we know (a newer host): say so
            // on its stream and keep serving.
            Err(banger_proto::FrameError::Decode { stream, source }) => {
                reply(
                    &s.sink,
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
        s.handle(frame);
    }
    s.sink.kill();
    let left: Vec<StreamCtl> = streams::lock(&s.table).drain().map(|(_, c)| c).collect();
    for ctl in left {
        ctl.abort();
    }
}

impl Session<'_> {
    fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Control {
                stream: CONTROL_STREAM,
                message,
            } => self.connection(message),
            Frame::Control { stream, message } => self.stream(stream, message),
            Frame::Data {
                stream,
                kind: FrameKind::Stdin,
                data,
            } => {
                let mut t = streams::lock(&self.table);
                let Some(ctl) = t.get(&stream) else { return };
                if let Err(e) = ctl.flow.received(data.len()) {
                    if let Some(ctl) = t.remove(&stream) {
                        drop(t);
                        ctl.abort();
                    }
                    reply(
                        &self.sink,
                        stream,
                        Message::Error {
                            message: e.to_string(),
                        },
                    );
                    return;
                }
                if let Some(tx) = &ctl.input {
                    let _ = tx.send(Some(data));
                }
            }
            // The host never sends stdout/stderr; ignore rather than end the
            // session over it.
            Frame::Data { .. } => {}
        }
    }

    fn connection(&mut self, message: Message) {
        let sink = &self.sink;
        match message {
            Message::Hello { capabilities, .. } => {
                self.flow_control = capabilities.iter().any(|c| c == caps::FLOW_CONTROL);
                self.not_started = capabilities.iter().any(|c| c == caps::EXEC_NOT_STARTED);
                reply(
                    sink,
                    CONTROL_STREAM,
                    Message::Ready {
                        agent_version: env!("CARGO_PKG_VERSION").into(),
                        protocol_version: PROTOCOL_VERSION,
                        capabilities: caps::AGENT.iter().map(|c| (*c).to_owned()).collect(),
                    },
                );
            }
            Message::Ping { nonce } => reply(sink, CONTROL_STREAM, Message::Pong { nonce }),
            Message::Shutdown { reboot } => {
                reply(sink, CONTROL_STREAM, Message::ShutdownAck);
                shutdown::run(reboot, self.ctx.pid1);
            }
            other => reply(
                sink,
                CONTROL_STREAM,
                Message::Error {
                    message: format!("unexpected on stream 0: {other:?}"),
                },
            ),
        }
    }

    /// Registers stream `id` and returns what its worker needs, or answers
    /// `error` when the id is taken.
    fn open(&self, id: u32) -> Option<streams::Stream> {
        let mut t = streams::lock(&self.table);
        if t.contains_key(&id) {
            drop(t);
            reply(
                &self.sink,
                id,
                Message::Error {
                    message: format!("stream {id} is in use"),
                },
            );
            return None;
        }
        let flow = Arc::new(Flow::new(self.flow_control));
        let (tx, rx) = mpsc::channel();
        t.insert(
            id,
            StreamCtl {
                flow: flow.clone(),
                input: Some(tx),
                pid: None,
                pty: None,
                on_abort: None,
            },
        );
        Some(streams::Stream {
            id,
            sink: self.sink.clone(),
            table: self.table.clone(),
            flow,
            input: rx,
        })
    }

    /// Runs `work` for stream `id` on its own thread.
    fn spawn(&self, id: u32, work: impl FnOnce(streams::Stream) + Send + 'static) {
        if let Some(st) = self.open(id) {
            std::thread::spawn(move || work(st));
        }
    }

    fn stream(&mut self, id: u32, message: Message) {
        match message {
            Message::Exec(req) => {
                let reaper = self.ctx.reaper.clone();
                let not_started = self.not_started;
                self.spawn(id, move |st| exec::run(st, req, reaper, not_started));
            }
            Message::TcpConnect { port, host } => {
                self.spawn(id, move |st| crate::tcp::run(st, port, host));
            }
            Message::CopyIn { dest } => self.spawn(id, move |st| crate::copy::copy_in(st, &dest)),
            Message::CopyOut {
                path,
                one_file_system,
            } => {
                self.spawn(id, move |st| {
                    crate::copy::copy_out(st, &path, one_file_system);
                });
            }
            Message::Ports => self.spawn(id, |st| {
                let answer = match crate::ports::list() {
                    Ok(ports) => Message::PortList { ports },
                    Err(e) => Message::Error {
                        message: format!("list ports: {e}"),
                    },
                };
                streams::forget(&st.table, st.id);
                reply(&st.sink, st.id, answer);
            }),
            Message::Stats => self.spawn(id, |st| {
                let answer = match crate::stats::collect() {
                    Ok(s) => Message::StatsReport(s),
                    Err(e) => Message::Error {
                        message: format!("collect stats: {e}"),
                    },
                };
                streams::forget(&st.table, st.id);
                reply(&st.sink, st.id, answer);
            }),
            // Inline, not on a worker thread: every millisecond between the
            // host's reading of its clock and ours is an error in the step.
            Message::SetClock { realtime_ns } => {
                let answer = match crate::identity::step_clock(realtime_ns) {
                    Ok(was_ns) => Message::ClockSet { was_ns },
                    Err(e) => Message::Error {
                        message: format!("set the clock: {e}"),
                    },
                };
                reply(&self.sink, id, answer);
            }
            Message::Identity(identity) => self.spawn(id, move |st| {
                let answer = match crate::identity::apply(&identity) {
                    Ok(()) => Message::IdentitySet,
                    Err(e) => Message::Error {
                        message: format!("take the new identity: {e}"),
                    },
                };
                streams::forget(&st.table, st.id);
                reply(&st.sink, st.id, answer);
            }),
            Message::Credit { bytes } => {
                // A credit for a stream that just ended is normal: ignore.
                if let Some(ctl) = streams::lock(&self.table).get(&id) {
                    ctl.flow.grant(bytes);
                }
            }
            Message::StdinClose => {
                let tx = streams::lock(&self.table)
                    .get_mut(&id)
                    .and_then(|c| c.input.take());
                if let Some(tx) = tx {
                    let _ = tx.send(None);
                }
            }
            Message::Abort => {
                let ctl = streams::lock(&self.table).remove(&id);
                if let Some(ctl) = ctl {
                    ctl.abort();
                }
            }
            Message::Resize(size) => {
                if let Some(pty) = streams::lock(&self.table)
                    .get(&id)
                    .and_then(|c| c.pty.as_ref())
                {
                    exec::resize(pty, size);
                }
            }
            Message::Signal { signal } => {
                if let Some(pid) = streams::lock(&self.table).get(&id).and_then(|c| c.pid) {
                    let _ = crate::sys::kill(pid, signal);
                }
            }
            other => reply(
                &self.sink,
                id,
                Message::Error {
                    message: format!("unexpected message {other:?}"),
                },
            ),
        }
    }
}
