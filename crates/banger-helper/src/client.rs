//! [`HelperClient`]: the daemon's side of the helper socket. One short
//! connection per operation, so a restarted helper is picked up without
//! any reconnect logic; [`HelperClient::connect`] checks the protocol
//! version once up front so a mismatch is reported at daemon start.

use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::HelperError;
use crate::host::{HelperInfo, HostNetwork, Outcome};
use crate::proto::{ErrorKind, HelperOp, PROTOCOL_VERSION, Request, Response};
use crate::wire::Conn;

/// Talks to a running banger-helper.
#[derive(Debug, Clone)]
pub struct HelperClient {
    path: PathBuf,
}

impl HelperClient {
    /// A client for the helper at `path`, after checking it answers and
    /// speaks this protocol version.
    pub async fn connect(path: &Path) -> Result<(Self, HelperInfo), HelperError> {
        let c = HelperClient {
            path: path.to_path_buf(),
        };
        let info = c.version().await?;
        if info.protocol != PROTOCOL_VERSION {
            return Err(HelperError::VersionMismatch {
                helper: info.protocol,
                client: PROTOCOL_VERSION,
            });
        }
        Ok((c, info))
    }

    /// A client that does not contact the helper until first used.
    pub fn lazy(path: &Path) -> Self {
        HelperClient {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Send an operation given as JSON without checking it here: the
    /// helper is the judge. For `banger-helper call` and for tests that
    /// must show the helper itself refuses a request.
    pub async fn call_json(&self, op: serde_json::Value) -> Result<Outcome, HelperError> {
        self.roundtrip(serde_json::json!({ "protocol": PROTOCOL_VERSION, "op": op }))
            .await
    }

    async fn roundtrip(&self, request: serde_json::Value) -> Result<Outcome, HelperError> {
        let stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| HelperError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        let mut conn = Conn::new(stream);
        let line =
            serde_json::to_vec(&request).map_err(|e| HelperError::Protocol(e.to_string()))?;
        // A helper that refuses the caller answers and hangs up before
        // reading; its answer is still readable after a failed write.
        let written = conn.write_line(&line, &[]).await;
        let read = conn.read_line().await;
        let (line, fds) = match (written, read) {
            (_, Ok(Some(got))) => got,
            (Err(source), _) => {
                return Err(HelperError::Io {
                    op: "write to",
                    source,
                });
            }
            (Ok(()), Err(source)) => {
                return Err(HelperError::Io {
                    op: "read from",
                    source,
                });
            }
            (Ok(()), Ok(None)) => {
                return Err(HelperError::Protocol("helper closed the connection".into()));
            }
        };
        let resp: Response = serde_json::from_slice(&line)
            .map_err(|e| HelperError::Protocol(format!("bad response: {e}")))?;
        match resp {
            Response::Ok(reply) => Ok(Outcome { reply, fds }),
            Response::Err(e) if e.kind == ErrorKind::VersionMismatch => {
                Err(HelperError::VersionMismatch {
                    helper: e.protocol,
                    client: PROTOCOL_VERSION,
                })
            }
            Response::Err(e) => Err(HelperError::Remote {
                kind: e.kind,
                message: e.message,
            }),
        }
    }
}

impl HostNetwork for HelperClient {
    async fn call(&self, op: HelperOp) -> Result<Outcome, HelperError> {
        let request = serde_json::to_value(Request {
            protocol: PROTOCOL_VERSION,
            op,
        })
        .map_err(|e| HelperError::Protocol(e.to_string()))?;
        self.roundtrip(request).await
    }
}
