//! Firecracker's hybrid vsock, host side: the guest's AF_VSOCK port is
//! reached through the VM's Unix socket after a one-line preamble
//! (`CONNECT <port>\n`, answered `OK <host port>\n`); from then on the
//! stream carries the agent protocol's ordinary frames.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::{Result, VmmError};

/// Performs the preamble on a freshly connected Unix stream; hand the
/// result to `AgentClient::connect`.
pub async fn connect<S>(stream: S, port: u32) -> Result<BufReader<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let io = |op: &'static str| {
        move |source| VmmError::Io {
            op,
            path: "the hybrid vsock socket".into(),
            source,
        }
    };
    let line = format!("CONNECT {port}\n");
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(io("send CONNECT to"))?;
    let mut reply = String::new();
    // BufReader may read past the newline into frame bytes; they stay in
    // its buffer, and the BufReader itself is what we hand back.
    stream
        .read_line(&mut reply)
        .await
        .map_err(io("read the CONNECT reply from"))?;
    if reply.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(VmmError::HybridVsock(reply.trim_end().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn preamble_then_frames_or_a_refusal() {
        let (host, mut fc) = tokio::io::duplex(4096);
        let srv = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            fc.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 1024\n");
            fc.write_all(b"OK 1073741824\n").await.unwrap();
            fc
        });
        connect(host, 1024).await.unwrap();
        srv.await.unwrap();
        let (host, mut fc) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 13];
            fc.read_exact(&mut buf).await.unwrap();
            fc.write_all(b"FAILURE\n").await.unwrap();
            fc
        });
        assert!(matches!(
            connect(host, 1024).await,
            Err(VmmError::HybridVsock(_))
        ));
    }
}
