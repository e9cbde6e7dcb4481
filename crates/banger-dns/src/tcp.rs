//! DNS over TCP with caps: hickory's own TCP listener spawns a task per
//! connection without limit, so a guest holding a thousand idle
//! connections would take a thousand of the daemon's descriptors. Here a
//! connection over the per-client or the total cap ([`Limits`]) is closed
//! at once, and one that sends nothing for the idle timeout is dropped.
//! Each message goes through the same guarded catalog as UDP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandle, TimeoutStream};
use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::guard::{Guarded, Limits};

/// Connections open now, per client and in all.
#[derive(Default)]
struct Open {
    per_client: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection; dropping it gives its slot back.
struct Slot {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|e| e.into_inner());
        o.total -= 1;
        if let Some(n) = o.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                o.per_client.remove(&self.client);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &Limits) -> Option<Slot> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let mine = o.per_client.get(&client).copied().unwrap_or(0);
    if o.total >= limits.tcp_total || mine >= limits.tcp_per_client {
        return None;
    }
    o.total += 1;
    *o.per_client.entry(client).or_insert(0) += 1;
    Some(Slot {
        open: open.clone(),
        client,
    })
}

/// Serve `listener` until the task is aborted.
pub(crate) async fn serve<H: RequestHandler>(
    listener: TcpListener,
    handler: Arc<Guarded<H>>,
    limits: Limits,
    allowed: Vec<IpNet>,
    idle: Duration,
    response_buffer: usize,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: wait for a slot to free rather than
                // spin on the error.
                tracing::debug!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let client = src.ip();
        if !allowed.is_empty() && !allowed.iter().any(|n| n.contains(&client)) {
            continue;
        }
        let Some(slot) = admit(&open, client, &limits) else {
            tracing::debug!(%client, "dns tcp connection over the cap: closed");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, src, handler, idle, response_buffer).await;
        });
    }
}

async fn connection<H: RequestHandler>(
    stream: tokio::net::TcpStream,
    src: SocketAddr,
    handler: Arc<Guarded<H>>,
    idle: Duration,
    response_buffer: usize,
) {
    let (buf_stream, stream_handle) =
        TcpStream::from_stream_with_buffer_size(AsyncIoTokioAsStd(stream), src, response_buffer);
    let mut messages = TimeoutStream::new(buf_stream, idle);
    let shared = crate::guard::Shared(handler);
    while let Some(Ok(message)) = messages.next().await {
        let (bytes, from) = message.into_parts();
        let Ok(request) = Request::from_bytes(bytes, from, Protocol::Tcp) else {
            return;
        };
        let handle = ResponseHandle::new(from, stream_handle.clone(), Protocol::Tcp);
        // One at a time per connection: a client gets no more work done
        // by pipelining than by waiting.
        shared
            .handle_request::<_, TokioTime>(&request, handle)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_client_and_in_all_and_given_back() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = Limits {
            tcp_per_client: 2,
            tcp_total: 3,
            ..Limits::default()
        };
        let a: IpAddr = "172.16.0.2".parse().unwrap();
        let b: IpAddr = "172.16.0.3".parse().unwrap();
        let s1 = admit(&open, a, &limits).unwrap();
        let _s2 = admit(&open, a, &limits).unwrap();
        assert!(admit(&open, a, &limits).is_none(), "per client");
        let _s3 = admit(&open, b, &limits).unwrap();
        assert!(admit(&open, b, &limits).is_none(), "in all");
        drop(s1);
        assert!(admit(&open, a, &limits).is_some(), "given back");
    }
}
