//! The daemon client: HTTP/1.1 over the Unix socket, starting `bangerd` when
//! nothing answers. Knows routes only as strings handed to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use banger_api::{API_VERSION, ApiError, DaemonInfo, Event, NDJSON};
use banger_config::{Config, Layout};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper::http::{Method, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Where this user's daemon lives: from the effective configuration, and
/// when a daemon of that data dir already runs with another runtime dir
/// (started from cron, a unit, another login), where its lock says.
pub fn layout() -> Result<Layout> {
    let config = Config::load()?;
    let mut layout = Layout::new(config.data_dir);
    if let Some(dir) = running_daemon_runtime_dir(&layout) {
        layout.runtime_dir = dir;
    }
    Ok(layout)
}

/// The runtime dir of the daemon holding `layout`'s lock, from what it
/// wrote there (`PID SOCKET`); `None` when no daemon holds it.
fn running_daemon_runtime_dir(layout: &Layout) -> Option<PathBuf> {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::File::open(layout.lock_file()).ok()?;
    // Taken: no daemon holds it, whatever the file says.
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    let text = std::fs::read_to_string(layout.lock_file()).ok()?;
    let (_pid, socket) = text.trim().split_once(' ')?;
    let dir = Path::new(socket).parent()?.to_path_buf();
    (Path::new(socket) != layout.socket()).then_some(dir)
}

/// A client of this user's daemon, started if nothing answers.
pub async fn daemon() -> Result<Client> {
    let layout = layout()?;
    connect(layout.socket(), &layout.daemon_log(), &layout.data_dir).await
}

/// URL path segment for a user-typed reference.
pub fn seg(r: &str) -> String {
    let mut out = String::new();
    for b in r.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        stream: bool,
    ) -> Result<hyper::Response<Incoming>> {
        let conn = UnixStream::connect(&self.socket).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .context("handshake with bangerd")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "bangerd");
        if stream {
            req = req.header(header::ACCEPT, NDJSON);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(b)))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        sender.send_request(req).await.context("request to bangerd")
    }

    /// Is a daemon answering on the socket?
    pub async fn ping(&self) -> Option<DaemonInfo> {
        self.call::<DaemonInfo, ()>(Method::GET, "/v1/version", None)
            .await
            .ok()
    }

    /// One request, one JSON answer; an error body becomes an [`ApiError`].
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let resp = self.send(method, path, body, false).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), &bytes).into());
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("undecodable answer from bangerd for {path}"))
    }

    /// A plain-text answer (console logs).
    pub async fn text(&self, path: &str) -> Result<Vec<u8>> {
        let resp = self.send(Method::GET, path, None, false).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), &bytes).into());
        }
        Ok(bytes.to_vec())
    }

    /// A long operation: events go to `on_event` as they arrive; the final
    /// `result` is decoded into `T`, an `error` event becomes the error.
    pub async fn stream<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        mut on_event: impl FnMut(&Event),
    ) -> Result<T> {
        let resp = self
            .send(method, path, Some(serde_json::to_vec(body)?), true)
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(decode_error(status.as_u16(), &bytes).into());
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("bangerd stopped answering mid-operation")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let ev: Event = serde_json::from_slice(&line[..line.len() - 1])
                    .context("undecodable event from bangerd")?;
                match ev {
                    Event::Result { value } => return Ok(serde_json::from_value(value)?),
                    Event::Error { error } => return Err(error.into()),
                    other => on_event(&other),
                }
            }
        }
        bail!("bangerd ended the operation without a result (did it crash? see its log)")
    }
}

/// The error of a failed response; codes this build does not know (from a
/// newer daemon) are kept, with the status the daemon sent.
pub(crate) fn decode_error(status: u16, bytes: &[u8]) -> ApiError {
    ApiError::from_response(status, bytes)
}

/// Where `bangerd` is: beside this executable (cargo and installs put it
/// there), else in `PATH`.
fn daemon_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

/// Connect, starting the daemon when nothing answers, and check it speaks our
/// API version and serves `data_dir`.
pub async fn connect(socket: PathBuf, log: &Path, data_dir: &Path) -> Result<Client> {
    let client = Client::new(socket);
    if let Some(info) = client.ping().await {
        return check_daemon(client, info, data_dir);
    }

    let exe = daemon_exe();
    if let Some(dir) = log.parent() {
        // Private from the start: the daemon refuses one others can write.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let log_err = log_file.try_clone()?;
    // Its own process group, so a Ctrl-C aimed at this CLI does not reach
    // the daemon; stdio detached so it outlives the terminal.
    let mut child = std::process::Command::new(&exe);
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(info) = client.ping().await {
            // Reap it later: the daemon keeps running after we exit.
            std::mem::forget(child);
            return check_daemon(client, info, data_dir);
        }
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output");
            bail!("bangerd exited ({status}) before answering: {last}");
        }
        if Instant::now() > deadline {
            bail!(
                "bangerd did not answer on {} within 15s; see {}",
                client.socket.display(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn check_daemon(client: Client, info: DaemonInfo, data_dir: &Path) -> Result<Client> {
    // A daemon of another data dir would show and change the wrong VMs.
    if Path::new(&info.data_dir) != data_dir {
        bail!(
            "bangerd (pid {}) on {} serves {}, not {}; stop it with `BANGER_HOME={} banger daemon stop`",
            info.pid,
            client.socket.display(),
            info.data_dir,
            data_dir.display(),
            info.data_dir
        );
    }
    if info.api_version != API_VERSION {
        return Err(anyhow!(
            "bangerd (pid {}) speaks API v{}, this banger speaks v{}; run `banger daemon stop` and retry",
            info.pid,
            info.api_version,
            API_VERSION
        ));
    }
    Ok(client)
}
