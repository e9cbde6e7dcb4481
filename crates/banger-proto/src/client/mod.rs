//! Async host-side client: one connection, many concurrent streams.
//!
//! A reader task demultiplexes incoming frames by stream id into per-stream
//! routes; a writer task serialises outgoing frames so any number of handles
//! can send without sharing a lock across an `.await` on the socket.
//!
//! Memory is bounded by the credit windows ([`crate::flow`]): a route's
//! queue holds at most one window because the agent sends no more until
//! the consumer's [`DataRx::recv`] frees room and we grant credit, and a
//! sender waits for the agent's credit before queueing data for the socket.
//! The reader task itself never waits, so one stalled consumer never holds
//! up the other streams. What else one agent can make the host hold is
//! bounded in [`conn`]: an agent that breaks a bound is cut off.

mod conn;
mod exec;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};

use conn::{Guard, Outbox, Outgoing};

use crate::flow::{INITIAL_WINDOW, MAX_CHUNK, RecvWindow, SendWindow};
use crate::{
    CONTROL_STREAM, Frame, FrameError, FrameKind, MAX_FRAME_LEN, Message, PROTOCOL_VERSION, caps,
};

pub use conn::{ConnState, EndWatch, MAX_PENDING_CONTROL, OUT_CONTROL_LIMIT, OUT_DATA_BUDGET};
pub use exec::{ExecControl, ExecHandle, ExecOutput};
pub use stream::{ByteStream, StreamSender};

/// Errors of the host-side client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading or writing the transport failed.
    #[error("agent connection: {op}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent something that is not a frame.
    #[error("bad frame from agent")]
    Frame(#[source] FrameError),
    /// The agent answered the handshake with something other than `Ready`.
    #[error("unexpected handshake reply: {0:?}")]
    Handshake(Box<Message>),
    /// The agent speaks another protocol version.
    #[error("agent speaks protocol {theirs}, we speak {ours}")]
    VersionMismatch {
        /// Ours.
        ours: u32,
        /// The agent's.
        theirs: u32,
    },
    /// The connection ended while a request was outstanding.
    #[error("agent connection closed")]
    Closed,
    /// The agent refused or failed a request.
    #[error("agent error: {0}")]
    Agent(String),
    /// The VM's agent predates a feature: it did not list the capability.
    #[error(
        "the guest agent (version {agent_version}) cannot {what}: it lacks the `{capability}` \
         capability; restart the VM to boot it with the current agent"
    )]
    Unsupported {
        /// The missing capability.
        capability: &'static str,
        /// What was asked, in words.
        what: &'static str,
        /// The agent's version, from its `Ready`.
        agent_version: String,
    },
    /// The agent broke the protocol (sent past its window, say).
    #[error("agent protocol violation: {0}")]
    Protocol(String),
    /// The agent does not do flow control, so nothing would bound what it
    /// makes the host buffer: refused at the handshake.
    #[error(
        "the guest agent (version {agent_version}) does not do flow control, so it could grow \
         the daemon's memory without limit; refused. Restart the VM to boot it with the \
         current agent"
    )]
    NoFlowControl {
        /// The agent's version, from its `Ready`.
        agent_version: String,
    },
    /// The host ended the connection because the agent broke a bound
    /// ([`conn`]): why.
    #[error("the guest agent was cut off: {0}")]
    CutOff(String),
    /// The exec's program could not be started (not found, not executable);
    /// `exit_code` is what a shell would exit with.
    #[error("{message}")]
    NotStarted {
        /// What is wrong.
        message: String,
        /// 127 or 126.
        exit_code: i32,
    },
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The credit windows of one stream, shared by the reader task (which
/// checks incoming data and applies credit) and the stream's handles.
pub(crate) struct StreamFlow {
    send: Mutex<SendWindow>,
    recv: Mutex<RecvWindow>,
    /// Wakes senders waiting for credit, and at the stream's end.
    credit: Notify,
    closed: AtomicBool,
}

impl StreamFlow {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            send: Mutex::new(SendWindow::new(INITIAL_WINDOW)),
            recv: Mutex::new(RecvWindow::new(INITIAL_WINDOW)),
            credit: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.credit.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn grant(&self, bytes: u32) {
        lock(&self.send).grant(bytes);
        self.credit.notify_waiters();
    }

    /// Waits until up to `want` bytes may be sent; `Closed` once the stream
    /// has ended.
    async fn reserve(&self, want: usize) -> Result<usize> {
        loop {
            let notified = self.credit.notified();
            tokio::pin!(notified);
            // Registered before looking, so a grant in between still wakes us.
            notified.as_mut().enable();
            if self.is_closed() {
                return Err(ClientError::Closed);
            }
            let n = lock(&self.send).reserve(want);
            if n > 0 {
                return Ok(n);
            }
            notified.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few arithmetic steps or one map
    // operation: a panic cannot leave the data half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the reader task sends what arrives for one stream.
struct Route {
    /// The stream's first answer: `started`, `opened`, `port_list`,
    /// `stats_report`.
    first: Option<oneshot::Sender<Result<Message>>>,
    stdout: Option<mpsc::UnboundedSender<Vec<u8>>>,
    stderr: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// The stream's last message: `exited` or `done`.
    end: Option<oneshot::Sender<Result<Message>>>,
    flow: Arc<StreamFlow>,
}

impl Route {
    fn fail(mut self, err: impl Fn() -> ClientError) {
        if let Some(tx) = self.first.take() {
            let _ = tx.send(Err(err()));
        }
        if let Some(tx) = self.end.take() {
            let _ = tx.send(Err(err()));
        }
        self.flow.close();
    }
}

pub(crate) struct Inner {
    out: Outbox,
    guard: Guard,
    routes: Mutex<HashMap<u32, Route>>,
    control: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    next_id: AtomicU32,
}

impl Inner {
    /// Queues a control frame.
    fn send(&self, frame: &Frame) -> Result<()> {
        let buf = frame.encode().map_err(ClientError::Frame)?;
        if self.out.control(buf, &self.guard) {
            Ok(())
        } else {
            Err(self.guard.error())
        }
    }

    /// Ends the connection for `reason`: the tasks stop, every waiter wakes.
    fn cut_off(&self, reason: String) {
        self.guard.cut_off(reason);
        self.out.close();
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Route>> {
        lock(&self.routes)
    }

    /// The consumer of stream `id` is done with `n` bytes: credit the agent
    /// once enough has been consumed.
    fn release(&self, id: u32, flow: &StreamFlow, n: usize) {
        if flow.is_closed() {
            return;
        }
        if let Some(bytes) = lock(&flow.recv).consumed(n) {
            let _ = self.send(&Frame::control(id, Message::Credit { bytes }));
        }
    }

    /// Sends `data` on stream `id` as `kind` frames, waiting for credit.
    async fn send_data(
        &self,
        id: u32,
        flow: &StreamFlow,
        kind: FrameKind,
        mut data: &[u8],
    ) -> Result<()> {
        while !data.is_empty() {
            let n = flow.reserve(data.len().min(MAX_CHUNK)).await?;
            let buf = Frame::Data {
                stream: id,
                kind,
                data: data[..n].to_vec(),
            }
            .encode()
            .map_err(ClientError::Frame)?;
            if !self.out.data(buf, n).await {
                return Err(self.guard.error());
            }
            data = &data[n..];
        }
        Ok(())
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

/// Data arriving on one stream (an exec's stdout or stderr, a TCP
/// connection's or a tar's bytes). Taking a chunk with [`Self::recv`] is
/// what grants the agent room for more; dropping the receiver discards the
/// rest without stalling the stream. A receiver does not keep the
/// connection open: it ends when the last client handle is dropped.
pub struct DataRx {
    id: u32,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    flow: Arc<StreamFlow>,
    inner: std::sync::Weak<Inner>,
}

impl std::fmt::Debug for DataRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataRx").field("id", &self.id).finish()
    }
}

impl DataRx {
    /// The next chunk; `None` once the agent sent all there is.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let chunk = self.rx.recv().await?;
        if let Some(inner) = self.inner.upgrade() {
            inner.release(self.id, &self.flow, chunk.len());
        }
        Some(chunk)
    }
}

impl Drop for DataRx {
    fn drop(&mut self) {
        // From now on the reader task releases what arrives; release what
        // is already queued here.
        self.rx.close();
        let inner = self.inner.upgrade();
        while let Ok(chunk) = self.rx.try_recv() {
            if let Some(inner) = &inner {
                inner.release(self.id, &self.flow, chunk.len());
            }
        }
    }
}

/// A freshly opened stream's plumbing, before its first answer.
struct Opening {
    id: u32,
    flow: Arc<StreamFlow>,
    first: oneshot::Receiver<Result<Message>>,
    end: oneshot::Receiver<Result<Message>>,
    stdout: DataRx,
    stderr: DataRx,
}

/// A connection to a guest agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
    agent_version: String,
    capabilities: Arc<Vec<String>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent_version", &self.agent_version)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// Reads one frame from an async stream; `None` at a clean end of stream.
/// Also used by the daemon and CLI for exec sessions, which carry the same
/// frames as the agent connection.
pub async fn read_frame_async<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(source) => {
            return Err(ClientError::Io {
                op: "read frame",
                source,
            });
        }
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_LEN {
        return Err(ClientError::Frame(FrameError::LengthTooLarge(len)));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)
        .await
        .map_err(|source| ClientError::Io {
            op: "read frame body",
            source,
        })?;
    Frame::decode(&body).map(Some).map_err(ClientError::Frame)
}

/// Writes one frame to an async stream.
pub async fn write_frame_async<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<()> {
    let buf = frame.encode().map_err(ClientError::Frame)?;
    w.write_all(&buf).await.map_err(|source| ClientError::Io {
        op: "write frame",
        source,
    })?;
    w.flush().await.map_err(|source| ClientError::Io {
        op: "flush frame",
        source,
    })
}

impl AgentClient {
    /// Performs the handshake on `stream` and starts the I/O tasks.
    ///
    /// Waits for the agent as long as it takes (the guest may still be
    /// booting): wrap in `tokio::time::timeout` for a deadline.
    pub async fn connect<S>(stream: S) -> Result<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let hello = Frame::control(
            CONTROL_STREAM,
            Message::Hello {
                protocol_version: PROTOCOL_VERSION,
                capabilities: caps::HOST.iter().map(|c| (*c).to_owned()).collect(),
            },
        )
        .encode()
        .map_err(ClientError::Frame)?;
        wr.write_all(&hello)
            .await
            .map_err(|source| ClientError::Io {
                op: "send hello",
                source,
            })?;
        let (agent_version, mut capabilities) = loop {
            match read_frame_async(&mut rd).await? {
                None => return Err(ClientError::Closed),
                Some(Frame::Control {
                    message:
                        Message::Ready {
                            agent_version,
                            protocol_version,
                            capabilities,
                        },
                    ..
                }) => {
                    if protocol_version != PROTOCOL_VERSION {
                        return Err(ClientError::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            theirs: protocol_version,
                        });
                    }
                    break (agent_version, capabilities);
                }
                // A previous session's late output may still be in flight on
                // a serial port that survives reconnects; skip it.
                Some(Frame::Data { .. }) => continue,
                Some(Frame::Control { stream, .. }) if stream != CONTROL_STREAM => continue,
                // So may an answer to an earlier session's ping; anything
                // else on stream 0 is no agent's first word.
                Some(Frame::Control {
                    message: Message::Pong { .. } | Message::ShutdownAck,
                    ..
                }) => continue,
                Some(Frame::Control { message, .. }) => {
                    return Err(ClientError::Handshake(Box::new(message)));
                }
            }
        };
        if capabilities.is_empty() {
            capabilities = caps::BASE.iter().map(|c| (*c).to_owned()).collect();
        }
        if !capabilities.iter().any(|c| c == caps::FLOW_CONTROL) {
            return Err(ClientError::NoFlowControl { agent_version });
        }

        let (out, mut out_rx) = Outbox::new();
        let (ctl_tx, ctl_rx) = mpsc::channel(MAX_PENDING_CONTROL);
        let inner = Arc::new(Inner {
            out,
            guard: Guard::new(),
            routes: Mutex::new(HashMap::new()),
            control: tokio::sync::Mutex::new(ctl_rx),
            next_id: AtomicU32::new(1),
        });

        let weak = Arc::downgrade(&inner);
        let mut ended = inner.guard.subscribe();
        tokio::spawn(async move {
            loop {
                let frame: Outgoing = tokio::select! {
                    f = out_rx.recv() => match f {
                        Some(f) => f,
                        None => break,
                    },
                    () = Guard::ended(&mut ended) => break,
                };
                if wr.write_all(&frame.buf).await.is_err() {
                    break;
                }
                let Some(inner) = weak.upgrade() else { break };
                inner.out.written(&frame);
            }
            if let Some(inner) = weak.upgrade() {
                inner.guard.closed();
                inner.out.close();
            }
            let _ = wr.shutdown().await;
        });

        let weak = Arc::downgrade(&inner);
        let mut ended = inner.guard.subscribe();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    f = read_frame_async(&mut rd) => match f {
                        Ok(Some(f)) => f,
                        // A message type from a newer agent: skip it.
                        Err(ClientError::Frame(FrameError::Decode { .. })) => continue,
                        Ok(None) | Err(_) => break,
                    },
                    () = Guard::ended(&mut ended) => break,
                };
                let Some(inner) = weak.upgrade() else { break };
                dispatch(&inner, &ctl_tx, frame);
            }
            // Failing every route wakes all waiters, with the cut-off's
            // reason when there is one.
            if let Some(inner) = weak.upgrade() {
                inner.guard.closed();
                inner.out.close();
                let routes: Vec<Route> = inner.routes().drain().map(|(_, r)| r).collect();
                for r in routes {
                    r.fail(|| inner.guard.error());
                }
            }
        });

        Ok(AgentClient {
            inner,
            agent_version,
            capabilities: Arc::new(capabilities),
        })
    }

    /// The agent's version string from the handshake.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// The agent's capabilities ([`caps`]), [`caps::BASE`] for an agent
    /// from before the list.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// A watch on this connection that does not keep it open: resolves
    /// when it ends, with the reason when the agent was cut off.
    pub fn end_watch(&self) -> EndWatch {
        EndWatch(self.inner.guard.subscribe())
    }

    /// Why the agent was cut off, once it was.
    pub fn cut_off_reason(&self) -> Option<String> {
        match self.end_watch().state() {
            ConnState::CutOff(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the agent listed `capability`.
    pub fn supports(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// `Unsupported` unless the agent listed `capability`.
    pub fn require(&self, capability: &'static str, what: &'static str) -> Result<()> {
        if self.supports(capability) {
            return Ok(());
        }
        Err(ClientError::Unsupported {
            capability,
            what,
            agent_version: self.agent_version.clone(),
        })
    }

    /// Round-trips a `Ping`.
    pub async fn ping(&self) -> Result<()> {
        let mut ctl = self.inner.control.lock().await;
        let nonce = u64::from(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        self.inner
            .send(&Frame::control(CONTROL_STREAM, Message::Ping { nonce }))?;
        loop {
            match ctl.recv().await {
                Some(Message::Pong { nonce: n }) if n == nonce => return Ok(()),
                Some(Message::Error { message }) => return Err(ClientError::Agent(message)),
                Some(_) => continue,
                None => return Err(self.inner.guard.error()),
            }
        }
    }

    /// Asks the guest to power off (or reboot). Returns once the agent
    /// acknowledged; the VM ends shortly after.
    pub async fn shutdown(&self, reboot: bool) -> Result<()> {
        let mut ctl = self.inner.control.lock().await;
        self.inner.send(&Frame::control(
            CONTROL_STREAM,
            Message::Shutdown { reboot },
        ))?;
        loop {
            match ctl.recv().await {
                Some(Message::ShutdownAck) => return Ok(()),
                Some(Message::Error { message }) => return Err(ClientError::Agent(message)),
                Some(_) => continue,
                None => return Err(self.inner.guard.error()),
            }
        }
    }

    /// Opens a stream with `request` as its first message.
    /// How busy this connection is, for a caller deciding whether the
    /// guest is in use: the streams open now (execs, shells, copies, tcp
    /// connections, requests in flight), and a count that grows with every
    /// stream opened (compare two readings to see streams that came and
    /// went in between).
    pub fn activity(&self) -> (usize, u32) {
        (
            self.inner.routes().len(),
            self.inner.next_id.load(Ordering::Relaxed),
        )
    }

    fn open(&self, request: Message) -> Result<Opening> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let flow = StreamFlow::new();
        let (first_tx, first) = oneshot::channel();
        let (end_tx, end) = oneshot::channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (err_tx, err_rx) = mpsc::unbounded_channel();
        self.inner.routes().insert(
            id,
            Route {
                first: Some(first_tx),
                stdout: Some(out_tx),
                stderr: Some(err_tx),
                end: Some(end_tx),
                flow: flow.clone(),
            },
        );
        if let Err(e) = self.inner.send(&Frame::control(id, request)) {
            self.inner.routes().remove(&id);
            return Err(e);
        }
        let rx = |rx| DataRx {
            id,
            rx,
            flow: flow.clone(),
            inner: Arc::downgrade(&self.inner),
        };
        Ok(Opening {
            id,
            stdout: rx(out_rx),
            stderr: rx(err_rx),
            flow,
            first,
            end,
        })
    }
}

fn dispatch(inner: &Inner, ctl: &mpsc::Sender<Message>, frame: Frame) {
    let stream = frame.stream();
    if stream == CONTROL_STREAM {
        if let Frame::Control { message, .. } = frame
            && let Err(mpsc::error::TrySendError::Full(_)) = ctl.try_send(message)
        {
            inner.cut_off(format!(
                "it sent more than {MAX_PENDING_CONTROL} connection messages nobody asked for \
                 (a flood)"
            ));
        }
        return;
    }
    let mut routes = inner.routes();
    let Some(route) = routes.get_mut(&stream) else {
        return;
    };
    match frame {
        Frame::Data { kind, data, .. } => {
            let flow = route.flow.clone();
            if let Err(e) = lock(&flow.recv).received(data.len()) {
                if let Some(r) = routes.remove(&stream) {
                    r.fail(|| ClientError::Protocol(e.to_string()));
                }
                drop(routes);
                let _ = inner.send(&Frame::control(stream, Message::Abort));
                return;
            }
            let tx = match kind {
                FrameKind::Stdout => route.stdout.as_ref(),
                FrameKind::Stderr => route.stderr.as_ref(),
                _ => None,
            };
            let n = data.len();
            // Nobody reads this any more: consume it here so the stream
            // keeps going (an exec whose output is not wanted still ends).
            if tx.is_none_or(|tx| tx.send(data).is_err()) {
                drop(routes);
                inner.release(stream, &flow, n);
            }
        }
        Frame::Control { message, .. } => match message {
            Message::Credit { bytes } => route.flow.grant(bytes),
            Message::Started { .. } | Message::Opened => {
                if let Some(tx) = route.first.take() {
                    let _ = tx.send(Ok(message));
                }
            }
            // One-shot answers end their stream.
            Message::PortList { .. }
            | Message::StatsReport(_)
            | Message::IdentitySet
            | Message::ClockSet { .. } => {
                if let Some(mut r) = routes.remove(&stream) {
                    if let Some(tx) = r.first.take() {
                        let _ = tx.send(Ok(message));
                    }
                    r.flow.close();
                }
            }
            Message::Eof => {
                route.stdout = None;
                route.stderr = None;
            }
            Message::Exited(_) | Message::Done => {
                if let Some(mut r) = routes.remove(&stream) {
                    if let Some(tx) = r.end.take() {
                        let _ = tx.send(Ok(message));
                    }
                    r.flow.close();
                }
            }
            Message::Error { message } => {
                if let Some(r) = routes.remove(&stream) {
                    r.fail(|| ClientError::Agent(message.clone()));
                }
            }
            Message::NotStarted { message, exit_code } => {
                if let Some(r) = routes.remove(&stream) {
                    r.fail(|| ClientError::NotStarted {
                        message: message.clone(),
                        exit_code,
                    });
                }
            }
            _ => {}
        },
    }
}
