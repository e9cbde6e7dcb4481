//! Newline-delimited JSON over a tokio Unix stream, with descriptors
//! passed as SCM_RIGHTS on the line they belong to. Reads go through
//! recvmsg so a descriptor is never lost with the bytes it came with.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::proto::MAX_LINE;

/// One end of a helper connection.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// The next line and the descriptors received with it; `None` at EOF.
    pub async fn read_line(&mut self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).take(pos).collect();
                return Ok(Some((line, std::mem::take(&mut self.fds))));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            let mut chunk = [0u8; 8192];
            let (n, fds) = self
                .stream
                .async_io(Interest::READABLE, || {
                    recv_with_fds(self.stream.as_raw_fd(), &mut chunk)
                })
                .await?;
            self.fds.extend(fds);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated line",
                    ))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Send `line` plus a newline, with `fds` attached to its first byte.
    pub async fn write_line(&self, line: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut msg = line.to_vec();
        msg.push(b'\n');
        let mut sent = 0;
        while sent < msg.len() {
            let attach = if sent == 0 { fds } else { &[] };
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    let cmsg: Vec<ControlMessage> = if attach.is_empty() {
                        Vec::new()
                    } else {
                        vec![ControlMessage::ScmRights(attach)]
                    };
                    sendmsg::<()>(
                        self.stream.as_raw_fd(),
                        &[IoSlice::new(&msg[sent..])],
                        &cmsg,
                        MsgFlags::MSG_NOSIGNAL,
                        None,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            sent += n;
        }
        Ok(())
    }
}

fn recv_with_fds(fd: RawFd, chunk: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(chunk)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: the kernel just installed `r` in our table for
                // this message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
