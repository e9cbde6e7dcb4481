//! Bounded byte pipes between blocking code (tar, files, sockets) and the
//! daemon's HTTP streams, so `vm cp` never holds more than a few chunks
//! whatever the size: a [`ChanWriter`] feeds a request body ([`ChanBody`]),
//! a response body feeds a [`ChanReader`] ([`drain_into`]). Each side waits
//! for the other through a channel of [`DEPTH`] chunks.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::sync::mpsc;

/// Bytes per chunk: the agent protocol's largest frame.
pub const CHUNK: usize = banger_proto::flow::MAX_CHUNK;
/// Chunks in flight per pipe.
pub const DEPTH: usize = 4;

pub type Chunk = io::Result<Bytes>;

/// A request body fed by a channel.
pub struct ChanBody(pub mpsc::Receiver<Chunk>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|chunk| chunk.map(Frame::data)))
    }
}

/// The writing end of a [`ChanBody`], for blocking code: buffers a chunk,
/// then waits for room in the channel.
pub struct ChanWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
    failed: bool,
}

impl ChanWriter {
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            failed: false,
        }
    }

    /// Ends the body with an error, so the daemon sees it cut short
    /// rather than complete; later writes fail.
    pub fn fail(&mut self, e: io::Error) {
        self.failed = true;
        self.buf.clear();
        let _ = self.tx.blocking_send(Err(e));
    }

    fn send(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the copy failed"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the daemon stopped reading"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the copy failed"));
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The reading end of a channel, for blocking code.
pub struct ChanReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
}

impl ChanReader {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.cur = chunk?,
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Moves a response body into `tx` chunk by chunk, waiting for room; a body
/// that breaks off ends the channel with an error.
pub async fn drain_into(mut body: Incoming, tx: mpsc::Sender<Chunk>) {
    loop {
        match body.frame().await {
            None => return,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && tx.send(Ok(data)).await.is_err()
                {
                    return;
                }
            }
            Some(Err(e)) => {
                // The way to the daemon broke (ssh): that says it all.
                let err = match crate::client::ssh::SshFailure::find(&e) {
                    Some(f) => io::Error::other(f.clone()),
                    None => io::Error::other(format!(
                        "the stream from bangerd broke off ({e}); the cause is in the daemon log"
                    )),
                };
                let _ = tx.send(Err(err)).await;
                return;
            }
        }
    }
}
