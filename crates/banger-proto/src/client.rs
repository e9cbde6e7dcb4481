//! Async host-side client: one connection, many concurrent execs.
//!
//! A reader task demultiplexes incoming frames by stream id into per-exec
//! routes; a writer task serialises outgoing frames so any number of handles
//! can send without sharing a lock across an `.await` on the socket.
//! Output channels are unbounded: the agent's own pipe buffers are the
//! backpressure we rely on today (a flood of output grows host memory until
//! the caller drains it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::{
    CONTROL_STREAM, ExecRequest, ExitStatus, Frame, FrameError, FrameKind, MAX_FRAME_LEN, Message,
    PROTOCOL_VERSION, TtySize,
};

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
    /// The hybrid-vsock preamble was refused.
    #[error("hybrid vsock connect refused: {0:?}")]
    HybridVsock(String),
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Performs Firecracker's hybrid-vsock preamble on a freshly connected
/// Unix stream: `CONNECT <port>\n` answered by `OK <host port>\n`. After it
/// the stream carries ordinary frames, so pass it to [`AgentClient::connect`].
pub async fn hybrid_vsock_connect<S>(stream: S, port: u32) -> Result<BufReader<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let line = format!("CONNECT {port}\n");
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|source| ClientError::Io {
            op: "send CONNECT",
            source,
        })?;
    let mut reply = String::new();
    // BufReader may read past the newline into frame bytes; they stay in
    // its buffer, and the BufReader itself is what we hand back.
    stream
        .read_line(&mut reply)
        .await
        .map_err(|source| ClientError::Io {
            op: "read CONNECT reply",
            source,
        })?;
    if reply.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(ClientError::HybridVsock(reply.trim_end().to_owned()))
    }
}

/// Where the reader task sends what arrives for one exec.
struct Route {
    started: Option<oneshot::Sender<Result<u32>>>,
    stdout: mpsc::UnboundedSender<Vec<u8>>,
    stderr: mpsc::UnboundedSender<Vec<u8>>,
    exit: Option<oneshot::Sender<Result<ExitStatus>>>,
}

struct Inner {
    out: mpsc::UnboundedSender<Vec<u8>>,
    routes: Mutex<HashMap<u32, Route>>,
    control: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    next_id: AtomicU32,
}

impl Inner {
    fn send(&self, frame: &Frame) -> Result<()> {
        let buf = frame.encode().map_err(ClientError::Frame)?;
        self.out.send(buf).map_err(|_| ClientError::Closed)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Route>> {
        // A panic while holding this lock leaves the map consistent (every
        // operation is a single insert/remove), so poisoning is ignored.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection to a guest agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
    agent_version: String,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent_version", &self.agent_version)
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
        let agent_version = loop {
            match read_frame_async(&mut rd).await? {
                None => return Err(ClientError::Closed),
                Some(Frame::Control {
                    message:
                        Message::Ready {
                            agent_version,
                            protocol_version,
                        },
                    ..
                }) => {
                    if protocol_version != PROTOCOL_VERSION {
                        return Err(ClientError::VersionMismatch {
                            ours: PROTOCOL_VERSION,
                            theirs: protocol_version,
                        });
                    }
                    break agent_version;
                }
                // A previous session's late output may still be in flight on
                // a serial port that survives reconnects; skip it.
                Some(Frame::Data { .. }) => continue,
                Some(Frame::Control { stream, .. }) if stream != CONTROL_STREAM => continue,
                Some(Frame::Control { message, .. }) => {
                    return Err(ClientError::Handshake(Box::new(message)));
                }
            }
        };

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            out: out_tx,
            routes: Mutex::new(HashMap::new()),
            control: tokio::sync::Mutex::new(ctl_rx),
            next_id: AtomicU32::new(1),
        });

        tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });

        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                let frame = match read_frame_async(&mut rd).await {
                    Ok(Some(f)) => f,
                    // A message type from a newer agent: skip it.
                    Err(ClientError::Frame(FrameError::Decode { .. })) => continue,
                    Ok(None) | Err(_) => break,
                };
                let Some(inner) = weak.upgrade() else { break };
                dispatch(&inner, &ctl_tx, frame);
            }
            // Dropping every route wakes all waiters with `Closed`.
            if let Some(inner) = weak.upgrade() {
                inner.routes().clear();
            }
        });

        Ok(AgentClient {
            inner,
            agent_version,
        })
    }

    /// The agent's version string from the handshake.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
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
                None => return Err(ClientError::Closed),
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
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Starts a process and waits until the agent reports its pid.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecHandle> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (started_tx, started_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = oneshot::channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (err_tx, err_rx) = mpsc::unbounded_channel();
        self.inner.routes().insert(
            id,
            Route {
                started: Some(started_tx),
                stdout: out_tx,
                stderr: err_tx,
                exit: Some(exit_tx),
            },
        );
        if let Err(e) = self.inner.send(&Frame::control(id, Message::Exec(req))) {
            self.inner.routes().remove(&id);
            return Err(e);
        }
        let pid = started_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(ExecHandle {
            id,
            pid,
            inner: self.inner.clone(),
            stdout: Some(out_rx),
            stderr: Some(err_rx),
            exit: exit_rx,
        })
    }
}

fn dispatch(inner: &Inner, ctl: &mpsc::UnboundedSender<Message>, frame: Frame) {
    let stream = frame.stream();
    if stream == CONTROL_STREAM {
        if let Frame::Control { message, .. } = frame {
            let _ = ctl.send(message);
        }
        return;
    }
    let mut routes = inner.routes();
    let Some(route) = routes.get_mut(&stream) else {
        return;
    };
    match frame {
        Frame::Data {
            kind: FrameKind::Stdout,
            data,
            ..
        } => {
            let _ = route.stdout.send(data);
        }
        Frame::Data {
            kind: FrameKind::Stderr,
            data,
            ..
        } => {
            let _ = route.stderr.send(data);
        }
        Frame::Data { .. } => {}
        Frame::Control { message, .. } => match message {
            Message::Started { pid } => {
                if let Some(tx) = route.started.take() {
                    let _ = tx.send(Ok(pid));
                }
            }
            Message::Exited(status) => {
                if let Some(tx) = routes.remove(&stream).and_then(|mut r| r.exit.take()) {
                    let _ = tx.send(Ok(status));
                }
            }
            Message::Error { message } => {
                if let Some(mut route) = routes.remove(&stream) {
                    let err = || ClientError::Agent(message.clone());
                    if let Some(tx) = route.started.take() {
                        let _ = tx.send(Err(err()));
                    }
                    if let Some(tx) = route.exit.take() {
                        let _ = tx.send(Err(err()));
                    }
                }
            }
            _ => {}
        },
    }
}

/// What a finished exec produced, from [`ExecHandle::output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// All stdout bytes (all terminal output for a tty exec).
    pub stdout: Vec<u8>,
    /// All stderr bytes.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// A running exec. Output arrives on the receivers from [`Self::stdout`] and
/// [`Self::stderr`] (each can be taken once); they end when the process has
/// exited and all its output was delivered.
#[derive(Debug)]
pub struct ExecHandle {
    id: u32,
    pid: u32,
    inner: Arc<Inner>,
    stdout: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    stderr: Option<mpsc::UnboundedReceiver<Vec<u8>>>,
    exit: oneshot::Receiver<Result<ExitStatus>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
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

/// The input side of an exec (stdin, resize, signals), cloneable so it can
/// be driven from another task while [`ExecHandle::wait`] owns the handle.
#[derive(Debug, Clone)]
pub struct ExecControl {
    id: u32,
    inner: Arc<Inner>,
}

impl ExecControl {
    /// Sends stdin bytes (the exec must have been started with `stdin: true`).
    pub fn write_stdin(&self, data: &[u8]) -> Result<()> {
        // Split so no frame exceeds the limit.
        for chunk in data.chunks(64 * 1024) {
            self.inner.send(&Frame::Data {
                stream: self.id,
                kind: FrameKind::Stdin,
                data: chunk.to_vec(),
            })?;
        }
        Ok(())
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&self) -> Result<()> {
        self.inner
            .send(&Frame::control(self.id, Message::StdinClose))
    }

    /// Resizes the terminal of a tty exec.
    pub fn resize(&self, size: TtySize) -> Result<()> {
        self.inner
            .send(&Frame::control(self.id, Message::Resize(size)))
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.inner
            .send(&Frame::control(self.id, Message::Signal { signal }))
    }
}

impl ExecHandle {
    /// The input side of this exec, for use from another task.
    pub fn control(&self) -> ExecControl {
        ExecControl {
            id: self.id,
            inner: self.inner.clone(),
        }
    }

    /// The process id in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the stdout receiver.
    pub fn stdout(&mut self) -> Option<mpsc::UnboundedReceiver<Vec<u8>>> {
        self.stdout.take()
    }

    /// Takes the stderr receiver.
    pub fn stderr(&mut self) -> Option<mpsc::UnboundedReceiver<Vec<u8>>> {
        self.stderr.take()
    }

    /// Sends stdin bytes (the exec must have been started with `stdin: true`).
    pub fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.control().write_stdin(data)
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&self) -> Result<()> {
        self.control().close_stdin()
    }

    /// Resizes the terminal of a tty exec.
    pub fn resize(&self, size: TtySize) -> Result<()> {
        self.control().resize(size)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.control().signal(signal)
    }

    /// Waits for the process to end. Output not taken is discarded.
    pub async fn wait(self) -> Result<ExitStatus> {
        self.exit.await.map_err(|_| ClientError::Closed)?
    }

    /// Collects all output and the exit status.
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut out_rx = self.stdout.take();
        let mut err_rx = self.stderr.take();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        async fn drain(rx: Option<&mut mpsc::UnboundedReceiver<Vec<u8>>>, buf: &mut Vec<u8>) {
            if let Some(rx) = rx {
                while let Some(chunk) = rx.recv().await {
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        let ((), ()) = tokio::join!(
            drain(out_rx.as_mut(), &mut stdout),
            drain(err_rx.as_mut(), &mut stderr)
        );
        let status = self.wait().await?;
        Ok(ExecOutput {
            stdout,
            stderr,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    async fn send(w: &mut DuplexStream, f: Frame) {
        w.write_all(&f.encode().unwrap()).await.unwrap();
    }

    async fn recv(r: &mut DuplexStream) -> Frame {
        read_frame_async(r).await.unwrap().expect("a frame")
    }

    /// Connects a client to a scripted agent at the other end of a pipe.
    async fn pair() -> (AgentClient, DuplexStream) {
        let (host, mut agent) = tokio::io::duplex(1 << 16);
        let fake = tokio::spawn(async move {
            match recv(&mut agent).await {
                Frame::Control {
                    message: Message::Hello { protocol_version },
                    ..
                } => assert_eq!(protocol_version, PROTOCOL_VERSION),
                other => panic!("expected hello, got {other:?}"),
            }
            // Stale output of an earlier session is skipped by the handshake.
            send(
                &mut agent,
                Frame::Data {
                    stream: 9,
                    kind: FrameKind::Stdout,
                    data: b"old".to_vec(),
                },
            )
            .await;
            send(
                &mut agent,
                Frame::control(
                    0,
                    Message::Ready {
                        agent_version: "t".into(),
                        protocol_version: PROTOCOL_VERSION,
                    },
                ),
            )
            .await;
            agent
        });
        let client = AgentClient::connect(host).await.unwrap();
        (client, fake.await.unwrap())
    }

    fn exec_of(f: &Frame) -> u32 {
        match f {
            Frame::Control {
                stream,
                message: Message::Exec(_),
            } => *stream,
            other => panic!("expected exec, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn interleaved_execs_are_demultiplexed() {
        let (client, mut agent) = pair().await;
        assert_eq!(client.agent_version(), "t");
        let c1 = client.clone();
        let first = tokio::spawn(async move {
            c1.exec(ExecRequest {
                argv: vec!["a".into()],
                env: vec![],
                cwd: None,
                user: None,
                tty: None,
                stdin: true,
            })
            .await
        });
        let a = exec_of(&recv(&mut agent).await);
        send(&mut agent, Frame::control(a, Message::Started { pid: 10 })).await;
        let ha = first.await.unwrap().unwrap();
        assert_eq!(ha.pid(), 10);

        let c2 = client.clone();
        let second = tokio::spawn(async move {
            c2.exec(ExecRequest {
                argv: vec!["b".into()],
                env: vec![],
                cwd: None,
                user: None,
                tty: None,
                stdin: false,
            })
            .await
        });
        let b = exec_of(&recv(&mut agent).await);
        assert_ne!(a, b);
        send(&mut agent, Frame::control(b, Message::Started { pid: 11 })).await;
        let hb = second.await.unwrap().unwrap();

        ha.write_stdin(b"in").unwrap();
        ha.close_stdin().unwrap();
        assert_eq!(
            recv(&mut agent).await,
            Frame::Data {
                stream: a,
                kind: FrameKind::Stdin,
                data: b"in".to_vec()
            }
        );
        assert_eq!(
            recv(&mut agent).await,
            Frame::control(a, Message::StdinClose)
        );

        for (s, k, d) in [
            (b, FrameKind::Stdout, "b1"),
            (a, FrameKind::Stdout, "a1"),
            (b, FrameKind::Stderr, "be"),
            (a, FrameKind::Stdout, "a2"),
        ] {
            send(
                &mut agent,
                Frame::Data {
                    stream: s,
                    kind: k,
                    data: d.into(),
                },
            )
            .await;
        }
        send(
            &mut agent,
            Frame::control(b, Message::Exited(ExitStatus::Signaled { signal: 9 })),
        )
        .await;
        send(
            &mut agent,
            Frame::control(a, Message::Exited(ExitStatus::Code { code: 3 })),
        )
        .await;
        let ob = hb.output().await.unwrap();
        assert_eq!((ob.stdout, ob.stderr), (b"b1".to_vec(), b"be".to_vec()));
        assert_eq!(ob.status.shell_code(), 137);
        let oa = ha.output().await.unwrap();
        assert_eq!(oa.stdout, b"a1a2");
        assert_eq!(oa.status, ExitStatus::Code { code: 3 });
    }

    #[tokio::test]
    async fn spawn_errors_and_lost_connections_wake_callers() {
        let (client, mut agent) = pair().await;
        let c = client.clone();
        let failing = tokio::spawn(async move {
            c.exec(ExecRequest {
                argv: vec!["nope".into()],
                env: vec![],
                cwd: None,
                user: None,
                tty: None,
                stdin: false,
            })
            .await
        });
        let id = exec_of(&recv(&mut agent).await);
        send(
            &mut agent,
            Frame::control(
                id,
                Message::Error {
                    message: "spawn nope".into(),
                },
            ),
        )
        .await;
        assert!(matches!(failing.await.unwrap(), Err(ClientError::Agent(m)) if m == "spawn nope"));

        let c = client.clone();
        let pending = tokio::spawn(async move {
            c.exec(ExecRequest {
                argv: vec!["x".into()],
                env: vec![],
                cwd: None,
                user: None,
                tty: None,
                stdin: false,
            })
            .await
        });
        let id = exec_of(&recv(&mut agent).await);
        send(&mut agent, Frame::control(id, Message::Started { pid: 1 })).await;
        let h = pending.await.unwrap().unwrap();
        // An unknown message type from a newer agent does not end things.
        let junk = br#"{"type":"from_the_future"}"#;
        let mut raw = (5 + u32::try_from(junk.len()).unwrap())
            .to_be_bytes()
            .to_vec();
        raw.extend_from_slice(&id.to_be_bytes());
        raw.push(0);
        raw.extend_from_slice(junk);
        agent.write_all(&raw).await.unwrap();
        let pinger = client.clone();
        let ping = tokio::spawn(async move { pinger.ping().await });
        match recv(&mut agent).await {
            Frame::Control {
                message: Message::Ping { nonce },
                ..
            } => {
                send(&mut agent, Frame::control(0, Message::Pong { nonce })).await;
            }
            other => panic!("expected ping, got {other:?}"),
        }
        ping.await.unwrap().unwrap();
        drop(agent);
        assert!(matches!(h.wait().await, Err(ClientError::Closed)));
        assert!(client.ping().await.is_err());
    }

    #[tokio::test]
    async fn version_mismatch_is_refused() {
        let (host, mut agent) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = recv(&mut agent).await;
            send(
                &mut agent,
                Frame::control(
                    0,
                    Message::Ready {
                        agent_version: "old".into(),
                        protocol_version: PROTOCOL_VERSION + 1,
                    },
                ),
            )
            .await;
            agent
        });
        assert!(matches!(
            AgentClient::connect(host).await,
            Err(ClientError::VersionMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn hybrid_vsock_preamble() {
        let (host, mut fc) = tokio::io::duplex(4096);
        let srv = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            fc.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            fc.write_all(b"OK 1073741824\n").await.unwrap();
            fc
        });
        hybrid_vsock_connect(host, 1024).await.unwrap();
        srv.await.unwrap();
        let (host, mut fc) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 13];
            fc.read_exact(&mut buf).await.unwrap();
            fc.write_all(b"FAILURE\n").await.unwrap();
            fc
        });
        assert!(matches!(
            hybrid_vsock_connect(host, 1024).await,
            Err(ClientError::HybridVsock(_))
        ));
    }
}
