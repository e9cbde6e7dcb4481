//! What stands between a client and the catalog: a per-client query rate
//! ([`Limits::queries_per_sec`], a token bucket per source address; over
//! it, REFUSED), one debug line per query (never info: a guest must not be
//! able to fill the daemon's log), and the [`AnswerHook`] that lets the
//! daemon act on an answer before the client sees it (egress allow lists
//! follow DNS names this way: the addresses are allowed before the guest
//! can connect to them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_server::net::NetError;
use hickory_server::proto::op::{Message, ResponseCode};
use hickory_server::proto::rr::{RData, Record};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

/// Something that wants to see the addresses of some answers first.
#[async_trait::async_trait]
pub trait AnswerHook: Send + Sync + 'static {
    /// Whether the answer to `client` for `name` (lowercase, no final
    /// dot) must pass [`Self::answered`]; cheap, asked for every query.
    fn wants(&self, client: IpAddr, name: &str) -> bool;
    /// The IPv4 addresses of the answer, with their TTLs; the answer is
    /// sent once this returns.
    async fn answered(&self, client: IpAddr, name: &str, addrs: &[(Ipv4Addr, u32)]);
}

/// How much one client may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sustained queries per second per client address (the burst is
    /// twice that).
    pub queries_per_sec: u32,
    /// TCP connections at once, per client address.
    pub tcp_per_client: usize,
    /// TCP connections at once, in all.
    pub tcp_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            queries_per_sec: 200,
            tcp_per_client: 8,
            tcp_total: 64,
        }
    }
}

/// Most clients whose buckets are remembered; beyond, the idle ones go.
const MAX_BUCKETS: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The catalog behind the rate limit, the query log and the hook.
pub(crate) struct Guarded<H> {
    inner: H,
    limits: Limits,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    hook: Option<Arc<dyn AnswerHook>>,
}

impl<H> Guarded<H> {
    pub fn new(inner: H, limits: Limits, hook: Option<Arc<dyn AnswerHook>>) -> Self {
        Guarded {
            inner,
            limits,
            buckets: Mutex::new(HashMap::new()),
            hook,
        }
    }

    /// Take one token of `client`'s bucket; false when it is empty.
    fn admit(&self, client: IpAddr) -> bool {
        let rate = f64::from(self.limits.queries_per_sec.max(1));
        let burst = rate * 2.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&client) {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Lets one `Guarded` serve both the UDP server and the TCP listener.
pub(crate) struct Shared<H>(pub Arc<Guarded<H>>);

#[async_trait::async_trait]
impl<H: RequestHandler> RequestHandler for Shared<H> {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0.handle::<R, T>(request, response_handle).await
    }
}

impl<H: RequestHandler> Guarded<H> {
    async fn handle<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let client = request.src().ip();
        let name = request
            .queries
            .queries()
            .first()
            .map(|q| {
                let n = q.name().to_string();
                n.trim_end_matches('.').to_ascii_lowercase()
            })
            .unwrap_or_default();
        tracing::debug!(%client, %name, "dns query");
        if !self.admit(client) {
            tracing::debug!(%client, "dns query over the rate limit: refused");
            let resp = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::Refused);
            return match response_handle.send_response(resp).await {
                Ok(info) => info,
                Err(_) => refused_info(request),
            };
        }
        let hook = self.hook.as_ref().filter(|h| h.wants(client, &name));
        let Some(hook) = hook else {
            return self
                .inner
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        // Answer into a buffer, let the hook see the addresses, then send
        // the same answer to the client.
        let capture = Capture::default();
        self.inner
            .handle_request::<Capture, T>(request, capture.clone())
            .await;
        let bytes = capture.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let msg = bytes.as_deref().and_then(|b| Message::from_vec(b).ok());
        let Some(msg) = msg else {
            return self
                .inner
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        let addrs: Vec<(Ipv4Addr, u32)> = msg
            .answers
            .iter()
            .filter_map(|r: &Record| match &r.data {
                RData::A(a) => Some((a.0, r.ttl)),
                _ => None,
            })
            .collect();
        hook.answered(client, &name, &addrs).await;
        let resp = MessageResponseBuilder::new(&request.queries, msg.edns.as_ref()).build(
            msg.metadata,
            msg.answers.iter(),
            msg.authorities.iter(),
            std::iter::empty(),
            msg.additionals.iter(),
        );
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(_) => refused_info(request),
        }
    }
}

fn refused_info(request: &Request) -> ResponseInfo {
    let mut meta = hickory_server::proto::op::Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::ServFail;
    hickory_server::proto::op::Header {
        metadata: meta,
        counts: Default::default(),
    }
    .into()
}

/// A response handler that keeps the encoded answer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::MAX);
        let info = response
            .destructive_emit(&mut encoder)
            .map_err(|e| NetError::from(e.to_string()))?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_is_refused_and_others_are_not() {
        let g = Guarded::new(
            (),
            Limits {
                queries_per_sec: 5,
                ..Limits::default()
            },
            None,
        );
        let a: IpAddr = "172.16.0.2".parse().unwrap();
        let b: IpAddr = "172.16.0.3".parse().unwrap();
        let admitted = (0..50).filter(|_| g.admit(a)).count();
        assert!(
            (10..=11).contains(&admitted),
            "burst of 2x the rate: {admitted}"
        );
        assert!(g.admit(b), "another client has its own bucket");
    }
}
