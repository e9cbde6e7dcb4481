//! The daemon client: HTTP/1.1 over one [`Transport`], starting `bangerd`
//! when nothing answers. Every command reaches the daemon through a
//! [`Client`]: plain JSON calls, NDJSON progress streams, request and
//! response bodies of any size (the files routes), and upgraded
//! connections (exec, tcp). Each opens its connection through
//! [`Transport::open`] and nowhere else.

mod transport;

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use banger_api::endpoint::{Input, Output};
use banger_api::endpoints::Version;
use banger_api::{API_VERSION, ApiError, DaemonInfo, Endpoint, Event, NDJSON};
use banger_config::{Config, Layout};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::http::{Method, StatusCode, header};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub use transport::Transport;

/// Where this user's daemon lives: from the effective configuration.
pub fn layout() -> Result<Layout> {
    let config = Config::load()?;
    Ok(Layout::new(config.data_dir))
}

/// A client of this user's daemon, not yet checked: for callers that
/// check while doing something else ([`Client::ensure`]).
pub fn unchecked() -> Result<Client> {
    let layout = layout()?;
    Ok(Client::new(Transport::Local {
        socket: layout.socket(),
        log: layout.daemon_log(),
        data_dir: layout.data_dir,
    }))
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

#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
}

impl Client {
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// Where the daemon is, for messages.
    pub fn describe(&self) -> String {
        self.transport.describe()
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
        let target = E::target(params, query);
        self.send(method_of::<E>(), &target, &[], body).await
    }

    async fn send<B>(
        &self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: B,
    ) -> Result<Response<Incoming>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = self.transport.open().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .context("handshake with bangerd")?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "bangerd");
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        sender
            .send_request(req.body(body)?)
            .await
            .context("request to bangerd")
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
                self.send(method, path, &headers, Full::new(Bytes::from(b)))
                    .await
            }
            None => {
                self.send(method, path, &headers, Full::new(Bytes::new()))
                    .await
            }
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
            .send(method_of::<E>(), &target, &headers, Empty::<Bytes>::new())
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

    /// Make sure the right daemon answers: start it when nothing does,
    /// then check it speaks this CLI's API and serves its data dir.
    pub async fn ensure(&self) -> Result<DaemonInfo> {
        let info = match self.ping().await {
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
            .context("reading the daemon's answer")?
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
        let bytes = resp.into_body().collect().await?.to_bytes();
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
        mut on_event: impl FnMut(&Event),
    ) -> Result<E::Response> {
        let target = E::target(params, &E::Query::default());
        let resp = self
            .send_json(method_of::<E>(), &target, json_body::<E>(body)?, true)
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

/// A failed response's error, read from its body.
pub async fn error_of(resp: Response<Incoming>) -> anyhow::Error {
    let status = resp.status().as_u16();
    match resp.into_body().collect().await {
        Ok(b) => decode_error(status, &b.to_bytes()).into(),
        Err(e) => anyhow!("bangerd answered {status} and then broke off: {e}"),
    }
}
