//! Exec streams: a process in the guest, its standard streams and status.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{AgentClient, ClientError, DataRx, Inner, Result, StreamFlow};
use crate::{ExecRequest, ExitStatus, Frame, FrameKind, Message, TtySize, caps};

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
/// exited and all its output was delivered. Output not taken is discarded
/// as it arrives, so it never holds the process up.
#[derive(Debug)]
pub struct ExecHandle {
    control: ExecControl,
    pid: u32,
    stdout: Option<DataRx>,
    stderr: Option<DataRx>,
    exit: oneshot::Receiver<Result<Message>>,
}

/// The input side of an exec (stdin, resize, signals), cloneable so it can
/// be driven from another task while [`ExecHandle::wait`] owns the handle.
#[derive(Clone)]
pub struct ExecControl {
    id: u32,
    inner: Arc<Inner>,
    flow: Arc<StreamFlow>,
}

impl std::fmt::Debug for ExecControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecControl").field("id", &self.id).finish()
    }
}

impl AgentClient {
    /// Starts a process and waits until the agent reports its pid.
    pub async fn exec(&self, req: ExecRequest) -> Result<ExecHandle> {
        if req.tty.is_some() {
            self.require(caps::PTY, "run a command on a terminal")?;
        }
        let o = self.open(Message::Exec(req))?;
        let pid = match o.first.await.map_err(|_| ClientError::Closed)?? {
            Message::Started { pid } => pid,
            other => return Err(ClientError::Protocol(format!("exec answered {other:?}"))),
        };
        Ok(ExecHandle {
            control: ExecControl {
                id: o.id,
                inner: self.inner.clone(),
                flow: o.flow,
            },
            pid,
            stdout: Some(o.stdout),
            stderr: Some(o.stderr),
            exit: o.end,
        })
    }
}

impl ExecControl {
    /// Sends stdin bytes (the exec must have been started with `stdin:
    /// true`), waiting while the agent's window for this exec is full.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.inner
            .send_data(self.id, &self.flow, FrameKind::Stdin, data)
            .await
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
        self.control.clone()
    }

    /// The process id in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Takes the stdout receiver.
    pub fn stdout(&mut self) -> Option<DataRx> {
        self.stdout.take()
    }

    /// Takes the stderr receiver.
    pub fn stderr(&mut self) -> Option<DataRx> {
        self.stderr.take()
    }

    /// Sends stdin bytes (see [`ExecControl::write_stdin`]).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.control.write_stdin(data).await
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&self) -> Result<()> {
        self.control.close_stdin()
    }

    /// Resizes the terminal of a tty exec.
    pub fn resize(&self, size: TtySize) -> Result<()> {
        self.control.resize(size)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) -> Result<()> {
        self.control.signal(signal)
    }

    /// Waits for the process to end. Output not taken is discarded.
    pub async fn wait(mut self) -> Result<ExitStatus> {
        drop(self.stdout.take());
        drop(self.stderr.take());
        match self.exit.await.map_err(|_| ClientError::Closed)?? {
            Message::Exited(status) => Ok(status),
            other => Err(ClientError::Protocol(format!("exec ended with {other:?}"))),
        }
    }

    /// Collects all output and the exit status.
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut out_rx = self.stdout.take();
        let mut err_rx = self.stderr.take();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        async fn drain(rx: Option<&mut DataRx>, buf: &mut Vec<u8>) {
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
