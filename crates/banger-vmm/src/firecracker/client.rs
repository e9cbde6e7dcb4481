//! Sending [`ApiRequest`]s to Firecracker over its Unix socket.
//!
//! hyper 1 over a `UnixStream`, with a `Content-Length` body: Firecracker's
//! micro HTTP server does not accept chunked bodies. A [`Session`] keeps one
//! connection for a sequence of requests (the configuration of a VM);
//! [`send`] opens one for a single request.
//! A refusal becomes [`VmmError::Api`] carrying Firecracker's own
//! `fault_message` and what was sent, on one line.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::api::ApiRequest;
use crate::{Result, VmmError};

/// The `fault_message` of an error answer, or the raw body when it has
/// none; newlines folded so the error stays on one line.
pub fn fault_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["fault_message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let one_line: Vec<&str> = text.split_whitespace().collect();
    if one_line.is_empty() {
        "(no message)".into()
    } else {
        one_line.join(" ")
    }
}

/// Longest string value quoted whole in an error.
const QUOTE_MAX: usize = 160;

/// The body as sent, for an error: field names and values, with long
/// strings (a command line) cut so the line stays readable.
pub fn sent_summary(body: &serde_json::Value) -> String {
    fn cut(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) if s.len() > QUOTE_MAX => {
                let head: String = s.chars().take(QUOTE_MAX / 2).collect();
                serde_json::Value::String(format!("{head}... ({} bytes)", s.len()))
            }
            serde_json::Value::Object(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), cut(v))).collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(cut).collect()),
            other => other.clone(),
        }
    }
    match body {
        serde_json::Value::Null => "no body".into(),
        b => cut(b).to_string(),
    }
}

/// One HTTP/1.1 connection to Firecracker's API, kept open for a
/// sequence of requests: a fresh connection costs Firecracker's server a few
/// milliseconds each, a request on an open one a tenth of a millisecond.
pub struct Session {
    socket: std::path::PathBuf,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn http_err(socket: &Path) -> impl Fn(hyper::Error) -> VmmError + '_ {
    move |e| VmmError::Io {
        op: "http",
        path: socket.display().to_string(),
        source: std::io::Error::other(e),
    }
}

impl Session {
    /// Connects to the API socket.
    pub async fn connect(socket: &Path) -> Result<Session> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| VmmError::Io {
                op: "connect",
                path: socket.display().to_string(),
                source,
            })?;
        Session::over(stream, socket).await
    }

    /// A session on a stream already connected to `socket`.
    pub async fn over(stream: tokio::net::UnixStream, socket: &Path) -> Result<Session> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err(socket))?;
        tokio::spawn(conn);
        Ok(Session {
            socket: socket.to_path_buf(),
            sender,
        })
    }

    /// Sends one request; returns the status and body, or
    /// [`VmmError::Api`] for a non-2xx answer.
    pub async fn send(&mut self, req: &ApiRequest) -> Result<(u16, Bytes)> {
        let body = if req.body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&req.body).unwrap_or_default()
        };
        let request = Request::builder()
            .method(req.method)
            .uri(&req.path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| VmmError::InvalidSpec(format!("request {}: {e}", req.path)))?;
        self.sender.ready().await.map_err(http_err(&self.socket))?;
        let resp = self
            .sender
            .send_request(request)
            .await
            .map_err(http_err(&self.socket))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(http_err(&self.socket))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(VmmError::Api {
                method: req.method,
                path: req.path.clone(),
                status,
                fault: fault_message(&bytes),
                sent: sent_summary(&req.body),
            });
        }
        Ok((status, bytes))
    }
}

/// Sends one request on a fresh connection; returns the status and body,
/// or [`VmmError::Api`] for a non-2xx answer.
pub async fn send(socket: &Path, req: &ApiRequest) -> Result<(u16, Bytes)> {
    Session::connect(socket).await?.send(req).await
}

#[cfg(test)]
mod tests {
    use super::super::api::{ActionType, action};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn fault_messages_are_one_line() {
        assert_eq!(
            fault_message(br#"{"fault_message":"bad\nthing"}"#),
            "bad thing"
        );
        assert_eq!(fault_message(b"not json"), "not json");
        assert_eq!(fault_message(b""), "(no message)");
    }

    #[test]
    fn sent_bodies_are_cut_not_dumped() {
        let long = "x".repeat(3000);
        let s = sent_summary(&serde_json::json!({"boot_args": long, "n": 1}));
        assert!(s.contains("\"n\":1") && s.contains("(3000 bytes)"), "{s}");
        assert!(s.len() < 200, "{s}");
        assert_eq!(sent_summary(&serde_json::Value::Null), "no body");
    }

    /// The bytes on the wire: a Content-Length body, no chunking.
    #[tokio::test]
    async fn sends_content_length_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for reply in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{\"fault_message\":\"bad\"}\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                // Read until the header and the whole body are in.
                loop {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap();
                        if got.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
                s.write_all(reply.as_bytes()).await.unwrap();
                seen.push(String::from_utf8(got).unwrap());
            }
            seen
        });
        let ok = action(ActionType::InstanceStart);
        assert_eq!(send(&sock, &ok).await.unwrap().0, 204);
        let err = send(&sock, &ok).await.unwrap_err();
        assert!(
            matches!(err, VmmError::Api { status: 400, ref fault, .. } if fault == "bad"),
            "{err:?}"
        );
        let seen = server.await.unwrap();
        let first = &seen[0];
        assert!(first.starts_with("PUT /actions HTTP/1.1\r\n"), "{first}");
        assert!(
            first
                .to_ascii_lowercase()
                .contains("content-length: 31\r\n"),
            "{first}"
        );
        assert!(
            !first.to_ascii_lowercase().contains("transfer-encoding"),
            "{first}"
        );
        assert!(
            first.ends_with("{\"action_type\":\"InstanceStart\"}"),
            "{first}"
        );
    }
}
