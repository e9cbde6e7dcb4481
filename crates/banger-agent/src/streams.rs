//! The streams of one session, and the flow-controlled plumbing they share:
//! an output pump, a `Write` that frames and a `Read` over inbound data.
//!
//! The session thread registers a stream (its [`Flow`] and the sender of
//! its inbound queue) before it starts the worker thread, so `credit`,
//! `stdin_close` and `abort` always find it, whatever the worker is doing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use banger_proto::flow::MAX_CHUNK;
use banger_proto::{Frame, FrameKind, Message};

use crate::flow::Flow;
use crate::transport::Sink;

/// Inbound data for a stream: bytes, or `None` for the host's
/// `stdin_close`.
pub type Input = Option<Vec<u8>>;

/// What the session needs to steer a stream.
pub struct StreamCtl {
    pub flow: Arc<Flow>,
    /// Where inbound data goes; taken at `stdin_close`.
    pub input: Option<mpsc::Sender<Input>>,
    /// An exec's pid, which is also its process group.
    pub pid: Option<i32>,
    /// A tty exec's terminal.
    pub pty: Option<Arc<File>>,
    /// Undoes what the worker holds open (a socket) on `abort` or when the
    /// session ends.
    pub on_abort: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for StreamCtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCtl")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl StreamCtl {
    /// Stops the stream's worker: closes the windows, kills an exec's
    /// process group, closes its socket.
    pub fn abort(mut self) {
        self.flow.close();
        self.input = None;
        if let Some(pid) = self.pid {
            // The exec runs in its own session, so its pid is its group.
            let _ = crate::sys::kill(-pid, libc::SIGKILL);
        }
        if let Some(f) = self.on_abort.take() {
            f();
        }
    }
}

/// The live streams of one session, by stream id.
pub type Table = Arc<Mutex<HashMap<u32, StreamCtl>>>;

pub fn lock(t: &Table) -> std::sync::MutexGuard<'_, HashMap<u32, StreamCtl>> {
    // Every critical section is a single map operation or field update.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a finished stream and closes its windows.
pub fn forget(table: &Table, id: u32) {
    if let Some(ctl) = lock(table).remove(&id) {
        ctl.flow.close();
    }
}

/// What a stream's worker thread gets from the session.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub sink: Arc<Sink>,
    pub table: Table,
    pub flow: Arc<Flow>,
    pub input: mpsc::Receiver<Input>,
}

impl Stream {
    /// Splits off the inbound queue, for a worker that reads it while it
    /// still uses the rest.
    pub fn take_input(self) -> (mpsc::Receiver<Input>, Stream) {
        let (_, empty) = mpsc::channel();
        let Stream {
            id,
            sink,
            table,
            flow,
            input,
        } = self;
        (
            input,
            Stream {
                id,
                sink,
                table,
                flow,
                input: empty,
            },
        )
    }
}

/// Counters an exec uses to tell a pump that waits for the host (keep
/// waiting) from one that waits on a pipe nobody writes (give up).
#[derive(Debug, Default)]
pub struct PumpState {
    /// Bumped at every chunk read.
    pub progress: AtomicU64,
    /// Pumps blocked on the host's window right now.
    pub waiting_for_credit: AtomicUsize,
}

/// Copies `src` to the host as `kind` frames of stream `id`, never more
/// than the host's window: while it is spent the pump does not read, so
/// the producer blocks on its pipe or socket. Returns at EOF, on a read
/// error, or once the stream is closed.
pub fn pump_out(
    mut src: impl Read,
    kind: FrameKind,
    id: u32,
    sink: &Sink,
    flow: &Flow,
    state: &PumpState,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        state.waiting_for_credit.fetch_add(1, Ordering::SeqCst);
        let room = flow.reserve(buf.len());
        state.waiting_for_credit.fetch_sub(1, Ordering::SeqCst);
        let Some(room) = room else { return Ok(()) };
        let n = loop {
            match src.read(&mut buf[..room]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    flow.unreserve(room);
                    return Err(e);
                }
            }
        };
        flow.unreserve(room - n);
        if n == 0 {
            return Ok(());
        }
        state.progress.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::Data {
            stream: id,
            kind,
            data: buf[..n].to_vec(),
        };
        if sink.send(&frame).is_err() {
            return Ok(());
        }
    }
}

/// A `Write` that sends stdout frames on a stream within its window
/// (a tar being produced). Buffer it: every write is at least one frame.
pub struct FrameWriter<'a> {
    pub id: u32,
    pub sink: &'a Sink,
    pub flow: &'a Flow,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self
            .flow
            .reserve(buf.len().min(MAX_CHUNK))
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the host went away"))?;
        self.sink.send(&Frame::Data {
            stream: self.id,
            kind: FrameKind::Stdout,
            data: buf[..n].to_vec(),
        })?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `Read` over a stream's inbound data (a tar arriving), crediting the
/// host as bytes are consumed. EOF at `stdin_close`, or when the stream is
/// aborted.
pub struct InputReader<'a> {
    pub id: u32,
    pub sink: &'a Sink,
    pub flow: &'a Flow,
    pub rx: mpsc::Receiver<Input>,
    pub chunk: Vec<u8>,
    pub pos: usize,
}

impl Read for InputReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Some(data)) => {
                    self.chunk = data;
                    self.pos = 0;
                }
                Ok(None) | Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.flow.consumed(n, self.id, self.sink);
        Ok(n)
    }
}

/// Sends a control message on stream `id`, ignoring a dead host.
pub fn reply(sink: &Sink, id: u32, message: Message) {
    let _ = sink.send(&Frame::control(id, message));
}
