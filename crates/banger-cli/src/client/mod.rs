//! The daemon client: HTTP/1.1 over one [`Transport`], starting `bangerd`
//! when nothing answers. Every command reaches the daemon through a
//! [`Client`]: plain JSON calls, NDJSON progress streams, request and
//! response bodies of any size (the files routes), and upgraded
//! connections (exec, tcp). Each opens its connection through
//! [`Transport::open`] and nowhere else.
//!
//! Which daemon: [`host`] (`--host` > `--context` > `BANGER_HOST` >
//! `BANGER_CONTEXT` > the current context > this host's). Over ssh, where
//! each connection is an ssh session, a connection whose answer is read
//! is kept for the next request of the same command (HTTP keep-alive).

pub mod host;
pub mod ssh;
mod transport;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use banger_api::endpoint::{Input, Output};
use banger_api::endpoints::Version;
use banger_api::{API_VERSION, ApiError, DaemonInfo, Endpoint, Event, NDJSON};
use banger_config::{Config, Layout};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::http::{Method, StatusCode, header};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub use host::{Host, host, pass_host, select};
pub use transport::Transport;

/// Where this user's daemon on this host lives (and this CLI's own files):
/// from the effective configuration.
pub fn layout() -> Result<Layout> {
    let config = Config::load()?;
    Ok(Layout::new(config.data_dir))
}

/// This user's daemon on this host, whatever [`host`] says.
pub fn local_transport() -> Result<Transport> {
    let layout = layout()?;
    Ok(Transport::Local {
        socket: layout.socket(),
        log: layout.daemon_log(),
        data_dir: layout.data_dir,
    })
}

/// The transport to the daemon [`host`] names.
pub fn transport() -> Result<Transport> {
    match host()? {
        Host::Local => local_transport(),
        Host::Ssh(target) => Ok(Transport::Ssh {
            target,
            control_dir: ssh::control_dir(),
            start: true,
        }),
    }
}

/// A client of this user's daemon, not yet checked: for callers that
/// check while doing something else ([`Client::ensure`]).
pub fn unchecked() -> Result<Client> {
    Ok(Client::new(transport()?))
}

/// A client of this user's daemon, started if nothing answers, and checked
/// to speak this CLI's API and to serve its data dir.
pub async fn daemon() -> Result<Client> {
    let c = unchecked()?;
    c.ensure().await?;
    Ok(c)
}

/// The HTTP method of an endpoint.
fn method_of<E: Endpoint>() -> Method {
    match E::METHOD {
        banger_api::endpoint::Method::Get => Method::GET,
        banger_api::endpoint::Method::Post => Method::POST,
        banger_api::endpoint::Method::Put => Method::PUT,
        banger_api::endpoint::Method::Patch => Method::PATCH,
        banger_api::endpoint::Method::Delete => Method::DELETE,
    }
}

/// The JSON body of a call of `E`, when it takes one.
fn json_body<E: Endpoint>(body: &E::Request) -> Result<Option<Vec<u8>>> {
    match E::INPUT {
        Input::Json { .. } => Ok(Some(serde_json::to_vec(body)?)),
        Input::None | Input::Tar => Ok(None),
    }
}

type BoxBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A connection whose last answer was taken, kept for the next request.
struct Idle {
    sender: SendRequest<BoxBody>,
    since: Instant,
}

/// How long a kept connection may wait: well under any idle timeout of
/// the daemon's, so a kept one is never closed under a request.
const KEEP_IDLE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Client {
    transport: Transport,
    idle: Arc<Mutex<Vec<Idle>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            idle: Arc::default(),
        }
    }

    /// Where the daemon is, for messages.
    pub fn describe(&self) -> String {
        self.transport.describe()
    }

    /// The remote host, when the daemon is not on this one.
    pub fn remote(&self) -> Option<&ssh::SshTarget> {
        self.transport.remote()
    }

    /// A kept connection ready for a request, if there is one.
    fn take_idle(&self) -> Option<SendRequest<BoxBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() < KEEP_IDLE);
        let at = idle.iter().position(|i| i.sender.is_ready())?;
        Some(idle.swap_remove(at).sender)
    }

    fn keep(&self, sender: SendRequest<BoxBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// A new connection, driven with upgrades on, so a 101 answer can be
    /// taken over.
    async fn connect(&self) -> Result<SendRequest<BoxBody>> {
        let conn = self.transport.open().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .map_err(|e| lift(anyhow::Error::new(e).context("handshake with bangerd")))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// A call of `E` with any body (the files routes): the response as it
    /// comes, for the caller to stream.
    pub async fn request<E, B>(
        &self,
        params: &[&str],
        query: &E::Query,
        body: B,
    ) -> Result<Response<Incoming>>
    where
        E: Endpoint,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.send_stream::<E, B>(params, query, &[], body).await
    }

    /// A body read once cannot be sent again: a new connection, never a
    /// kept one that might turn out closed.
    async fn send_stream<E, B>(
        &self,
        params: &[&str],
        query: &E::Query,
        headers: &[(header::HeaderName, &str)],
        body: B,
    ) -> Result<Response<Incoming>>
    where
        E: Endpoint,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let target = E::target(params, query);
        let sender = self.connect().await?;
        let req = build(
            method_of::<E>(),
            &target,
            headers,
            body.map_err(Into::into).boxed_unsync(),
        )?;
        self.send_on(sender, req).await
    }

    /// A long operation `E` whose request body is a tar stream (an
    /// upload): events go to `on_event`, the `result` is its answer.
    pub async fn stream_tar<E, B>(
        &self,
        params: &[&str],
        query: &E::Query,
        body: B,
        on_event: impl FnMut(&Event),
    ) -> Result<E::Response>
    where
        E: Endpoint,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let headers = [
            (header::ACCEPT, NDJSON),
            (header::CONTENT_TYPE, "application/x-tar"),
        ];
        let resp = self
            .send_stream::<E, B>(params, query, &headers, body)
            .await?;
        read_events::<E>(resp, on_event).await
    }

    /// A request whose body is in memory: on a kept connection when there
    /// is one (sent again on a new one if that had closed meanwhile).
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let boxed = |b: Bytes| -> BoxBody { Full::new(b).map_err(|e| match e {}).boxed_unsync() };
        if self.transport.reuses_connections()
            && let Some(sender) = self.take_idle()
        {
            let req = build(method.clone(), uri, headers, boxed(body.clone()))?;
            match self.send_on(sender, req).await {
                // Sent again only when it cannot have been acted on twice.
                Err(e) if stale(&e, method == Method::GET) => {}
                other => return other,
            }
        }
        let sender = self.connect().await?;
        self.send_on(sender, build(method, uri, headers, boxed(body))?)
            .await
    }

    async fn send_on(
        &self,
        mut sender: SendRequest<BoxBody>,
        req: Request<BoxBody>,
    ) -> Result<Response<Incoming>> {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| lift(anyhow::Error::new(e).context("request to bangerd")))?;
        // An upgraded connection is the caller's now.
        if self.transport.reuses_connections() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            self.keep(sender);
        }
        Ok(resp)
    }

    /// A JSON body, or none.
    async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        stream: bool,
    ) -> Result<Response<Incoming>> {
        let mut headers = Vec::new();
        if stream {
            headers.push((header::ACCEPT, NDJSON));
        }
        match body {
            Some(b) => {
                headers.push((header::CONTENT_TYPE, "application/json"));
                self.send(method, path, &headers, Bytes::from(b)).await
            }
            None => self.send(method, path, &headers, Bytes::new()).await,
        }
    }

    /// Ask the daemon to switch a new connection to the protocol `E`
    /// upgrades to (an exec session, a guest TCP stream); a refusal becomes
    /// its [`ApiError`].
    pub async fn upgrade<E: Endpoint>(
        &self,
        params: &[&str],
        query: &E::Query,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let Output::Upgrade(protocol) = E::OUTPUT else {
            bail!("{} is no upgrade", E::ID);
        };
        let headers = [(header::CONNECTION, "upgrade"), (header::UPGRADE, protocol)];
        let target = E::target(params, query);
        let mut resp = self
            .send(method_of::<E>(), &target, &headers, Bytes::new())
            .await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(error_of(resp).await);
        }
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .with_context(|| format!("{protocol} upgrade"))?;
        Ok(TokioIo::new(upgraded))
    }

    /// Is a daemon answering?
    pub async fn ping(&self) -> Option<DaemonInfo> {
        self.call::<Version>(&[], &()).await.ok()
    }

    /// Is a daemon answering? `Ok(None)` when none runs; an error when the
    /// way there is broken (ssh refused, no banger on the remote), which
    /// starting a daemon here would not mend.
    pub async fn try_ping(&self) -> Result<Option<DaemonInfo>> {
        match self.call::<Version>(&[], &()).await {
            Ok(info) => Ok(Some(info)),
            Err(_) if self.transport.remote().is_none() => Ok(None),
            Err(e) => match e.downcast_ref::<ssh::SshFailure>() {
                Some(f) if f.not_running() => Ok(None),
                _ => Err(e),
            },
        }
    }

    /// Make sure the right daemon answers: start it when nothing does,
    /// then check it speaks this CLI's API and serves its data dir.
    pub async fn ensure(&self) -> Result<DaemonInfo> {
        let info = match self.try_ping().await? {
            Some(info) => info,
            None => {
                let child = self.transport.start_daemon()?;
                transport::wait_started(&self.transport, child, || self.ping()).await?
            }
        };
        self.check(&info)?;
        Ok(info)
    }

    fn check(&self, info: &DaemonInfo) -> Result<()> {
        // A daemon of another data dir would show and change the wrong VMs.
        if let Some(data_dir) = self.transport.data_dir()
            && Path::new(&info.data_dir) != data_dir
        {
            bail!(
                "bangerd (pid {}) on {} serves {}, not {}; stop it with `BANGER_HOME={} banger daemon stop`",
                info.pid,
                self.describe(),
                info.data_dir,
                data_dir.display(),
                info.data_dir
            );
        }
        if info.api_version != API_VERSION
            && let Some(target) = self.transport.remote()
        {
            bail!(
                "bangerd on {target} speaks API v{}, this banger speaks v{}: install the same banger version on both hosts (this one is {}, the remote daemon {})",
                info.api_version,
                API_VERSION,
                env!("CARGO_PKG_VERSION"),
                info.version
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
        Ok(())
    }

    /// A call of `E` with these path parameters and body: its JSON
    /// answer; an error body becomes an [`ApiError`].
    pub async fn call<E: Endpoint>(
        &self,
        params: &[&str],
        body: &E::Request,
    ) -> Result<E::Response> {
        self.call_with::<E>(params, &E::Query::default(), body)
            .await
    }

    /// [`Self::call`] with a query.
    pub async fn call_with<E: Endpoint>(
        &self,
        params: &[&str],
        query: &E::Query,
        body: &E::Request,
    ) -> Result<E::Response> {
        let target = E::target(params, query);
        let resp = self
            .send_json(method_of::<E>(), &target, json_body::<E>(body)?, false)
            .await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| lift(anyhow::Error::new(e).context("reading the daemon's answer")))?
            .to_bytes();
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), &bytes).into());
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("undecodable answer from bangerd for {}", E::ID))
    }

    /// A plain-text answer of `E` (the console log).
    pub async fn text<E: Endpoint>(&self, params: &[&str]) -> Result<Vec<u8>> {
        let target = E::target(params, &E::Query::default());
        let resp = self
            .send_json(method_of::<E>(), &target, None, false)
            .await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| lift(e.into()))?
            .to_bytes();
        if !status.is_success() {
            return Err(decode_error(status.as_u16(), &bytes).into());
        }
        Ok(bytes.to_vec())
    }

    /// A long operation `E`: events go to `on_event` as they arrive; the
    /// final `result` is decoded into its answer, an `error` event becomes
    /// the error.
    pub async fn stream<E: Endpoint>(
        &self,
        params: &[&str],
        body: &E::Request,
        on_event: impl FnMut(&Event),
    ) -> Result<E::Response> {
        let target = E::target(params, &E::Query::default());
        let resp = self
            .send_json(method_of::<E>(), &target, json_body::<E>(body)?, true)
            .await?;
        read_events::<E>(resp, on_event).await
    }
}

/// The events of a long operation's answer, to its `result`.
async fn read_events<E: Endpoint>(
    resp: Response<Incoming>,
    mut on_event: impl FnMut(&Event),
) -> Result<E::Response> {
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body.collect().await?.to_bytes();
        return Err(decode_error(status.as_u16(), &bytes).into());
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            lift(anyhow::Error::new(e).context("bangerd stopped answering mid-operation"))
        })?;
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

fn build(
    method: Method,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
    body: BoxBody,
) -> Result<Request<BoxBody>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "bangerd");
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    Ok(req.body(body)?)
}

/// A kept connection that the daemon had closed: the request was never
/// sent (canceled), or, for a request that reads only (`idempotent`), no
/// answer came.
fn stale(e: &anyhow::Error, idempotent: bool) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<hyper::Error>())
        .any(|h| h.is_canceled() || (idempotent && (h.is_incomplete_message() || h.is_closed())))
}

/// An error whose cause is ssh failing becomes that failure alone: its
/// one line says all (hyper's "connection closed" around it says nothing).
pub fn lift(e: anyhow::Error) -> anyhow::Error {
    match ssh::SshFailure::find(e.as_ref()) {
        Some(f) => anyhow::Error::new(f.clone()),
        None => e,
    }
}

/// The error of a failed response; codes this build does not know (from a
/// newer daemon) are kept, with the status the daemon sent.
pub(crate) fn decode_error(status: u16, bytes: &[u8]) -> ApiError {
    ApiError::from_response(status, bytes)
}

/// A failed response's error, read from its body.
pub async fn error_of(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status().as_u16();
    match resp.into_body().collect().await {
        Ok(b) => decode_error(status, &b.to_bytes()).into(),
        Err(e) => anyhow!("bangerd answered {status} and then broke off: {e}"),
    }
}
