//! Byte streams (TCP connections into the guest, tar streams in and out)
//! and the one-shot requests (`ports`, `stats`).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{AgentClient, ClientError, DataRx, Inner, Result, StreamFlow};
use crate::{Frame, FrameKind, GuestStats, ListeningPort, Message, caps};

/// An open byte stream to the agent. Read the agent's bytes from
/// [`Self::reader`], write with a [`StreamSender`]; [`Self::finish`] waits
/// for the agent's verdict. Dropping it unfinished aborts the stream in the
/// guest (closes the socket, stops the copy).
#[derive(Debug)]
pub struct ByteStream {
    sender: StreamSender,
    reader: Option<DataRx>,
    end: Option<oneshot::Receiver<Result<Message>>>,
}

/// The writing half of a [`ByteStream`], cloneable across tasks.
#[derive(Clone)]
pub struct StreamSender {
    id: u32,
    inner: Arc<Inner>,
    flow: Arc<StreamFlow>,
}

impl std::fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender")
            .field("id", &self.id)
            .finish()
    }
}

impl StreamSender {
    /// Sends bytes, waiting while the agent's window is full.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        self.inner
            .send_data(self.id, &self.flow, FrameKind::Stdin, data)
            .await
    }

    /// No more bytes from us: half-closes the TCP connection, ends the tar.
    pub fn close(&self) -> Result<()> {
        self.inner
            .send(&Frame::control(self.id, Message::StdinClose))
    }
}

impl ByteStream {
    /// A handle to write with.
    pub fn sender(&self) -> StreamSender {
        self.sender.clone()
    }

    /// Takes the receiver of the agent's bytes (once). It ends at the
    /// agent's `eof`, or when the stream ends.
    pub fn reader(&mut self) -> Option<DataRx> {
        self.reader.take()
    }

    /// Waits for the end of the stream: `Ok` when the agent finished the
    /// operation, its error otherwise.
    pub async fn finish(mut self) -> Result<()> {
        drop(self.reader.take());
        let end = self.end.take().ok_or(ClientError::Closed)?;
        match end.await.map_err(|_| ClientError::Closed)?? {
            Message::Done => Ok(()),
            other => Err(ClientError::Protocol(format!(
                "stream ended with {other:?}"
            ))),
        }
    }

    /// Abandons the stream now.
    pub fn abort(mut self) {
        self.abort_now();
    }

    fn abort_now(&mut self) {
        if self.end.take().is_some()
            && let Some(route) = self.sender.inner.routes().remove(&self.sender.id)
        {
            route.fail(|| ClientError::Closed);
            let _ = self
                .sender
                .inner
                .send(&Frame::control(self.sender.id, Message::Abort));
        }
    }
}

impl Drop for ByteStream {
    fn drop(&mut self) {
        self.abort_now();
    }
}

impl AgentClient {
    /// Opens a stream whose first answer is `opened`.
    async fn open_stream(&self, request: Message) -> Result<ByteStream> {
        let o = self.open(request)?;
        let mut stream = ByteStream {
            sender: StreamSender {
                id: o.id,
                inner: self.inner.clone(),
                flow: o.flow,
            },
            reader: Some(o.stdout),
            end: Some(o.end),
        };
        match o.first.await.map_err(|_| ClientError::Closed)? {
            Ok(Message::Opened) => Ok(stream),
            Ok(other) => {
                stream.abort_now();
                Err(ClientError::Protocol(format!(
                    "stream opened with {other:?}"
                )))
            }
            Err(e) => {
                // The route is gone already; nothing to abort.
                stream.end = None;
                Err(e)
            }
        }
    }

    /// Connects to `host:port` inside the guest (127.0.0.1 when `host` is
    /// `None`) and returns the spliced stream: what is written goes to the
    /// socket, the reader yields what the guest sends, `close` half-closes,
    /// and the reader ends when the guest half-closes.
    pub async fn tcp_connect(&self, port: u16, host: Option<String>) -> Result<ByteStream> {
        self.require(caps::TCP_CONNECT, "connect to a guest port")?;
        self.open_stream(Message::TcpConnect { port, host }).await
    }

    /// Starts unpacking a tar stream under `dest` in the guest: write the
    /// archive, `close`, then [`ByteStream::finish`] for the outcome.
    pub async fn copy_in(&self, dest: &str) -> Result<ByteStream> {
        self.require(caps::FILE_COPY, "copy files into the VM")?;
        self.open_stream(Message::CopyIn {
            dest: dest.to_owned(),
        })
        .await
    }

    /// Starts a tar of `path` in the guest: read the archive from the
    /// reader to its end, then [`ByteStream::finish`] for the outcome.
    pub async fn copy_out(&self, path: &str) -> Result<ByteStream> {
        self.require(caps::FILE_COPY, "copy files out of the VM")?;
        self.open_stream(Message::CopyOut {
            path: path.to_owned(),
            one_file_system: false,
        })
        .await
    }

    /// [`Self::copy_out`] that stays on `path`'s filesystem: directories
    /// other filesystems are mounted on are sent empty (`image commit`
    /// reads the root this way, without /proc, /sys, /dev or /root).
    pub async fn copy_out_one_fs(&self, path: &str) -> Result<ByteStream> {
        self.require(caps::COPY_ONE_FS, "copy one filesystem out of the VM")?;
        self.open_stream(Message::CopyOut {
            path: path.to_owned(),
            one_file_system: true,
        })
        .await
    }

    /// The guest's listening TCP and UDP sockets.
    pub async fn ports(&self) -> Result<Vec<ListeningPort>> {
        self.require(caps::PORTS, "list listening ports")?;
        match self.request(Message::Ports).await? {
            Message::PortList { ports } => Ok(ports),
            other => Err(ClientError::Protocol(format!("ports answered {other:?}"))),
        }
    }

    /// The guest's memory, CPU, uptime and disk usage.
    pub async fn stats(&self) -> Result<GuestStats> {
        self.require(caps::STATS, "report guest statistics")?;
        match self.request(Message::Stats).await? {
            Message::StatsReport(s) => Ok(s),
            other => Err(ClientError::Protocol(format!("stats answered {other:?}"))),
        }
    }

    /// Tells a restored guest who it is now (hostname, clock, entropy,
    /// NIC).
    pub async fn set_identity(&self, identity: crate::GuestIdentity) -> Result<()> {
        self.require(caps::IDENTITY, "take a new identity after a restore")?;
        match self.request(Message::Identity(identity)).await? {
            Message::IdentitySet => Ok(()),
            other => Err(ClientError::Protocol(format!(
                "identity answered {other:?}"
            ))),
        }
    }

    /// Steps the guest's wall clock to the host's now; returns how far
    /// behind (positive) or ahead the guest's clock was, in nanoseconds.
    pub async fn set_clock(&self) -> Result<i128> {
        self.require(caps::CLOCK, "step its clock after a resume")?;
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        };
        let sent = now();
        match self
            .request(Message::SetClock { realtime_ns: sent })
            .await?
        {
            Message::ClockSet { was_ns } => Ok(i128::from(sent) - i128::from(was_ns)),
            other => Err(ClientError::Protocol(format!(
                "set_clock answered {other:?}"
            ))),
        }
    }

    /// A one-shot request on its own stream.
    async fn request(&self, request: Message) -> Result<Message> {
        let o = self.open(request)?;
        o.first.await.map_err(|_| ClientError::Closed)?
    }
}
