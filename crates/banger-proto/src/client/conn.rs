//! What one agent connection may make the host hold, and the cut-off.
//!
//! The guest is not trusted, so nothing it sends may grow the host's
//! memory beyond a fixed bound per connection:
//!
//! - data it sends is held to one credit window per stream ([`crate::flow`]);
//!   an agent without `flow_control` is refused at the handshake;
//! - connection-level messages (stream 0) wait in a queue of
//!   [`MAX_PENDING_CONTROL`] for the one `ping` or `shutdown` in progress:
//!   an agent that sends more than that unasked is flooding;
//! - frames for the socket wait in the [`Outbox`]: data frames up to
//!   [`OUT_DATA_BUDGET`] bytes (a sender then waits, as for credit, so an
//!   agent that grants credit and does not read stalls only its stream),
//!   control frames (credits, aborts) up to [`OUT_CONTROL_LIMIT`] bytes:
//!   past that the agent has stopped reading for good.
//!
//! Breaking a bound *cuts the agent off*: the connection ends, every
//! waiter gets [`ClientError::CutOff`] with the reason, and the reason stays
//! readable ([`EndWatch`]) for the daemon to log and show.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc, watch};

use super::ClientError;

/// Unasked stream-0 messages the host keeps before calling it a flood. A
/// well-behaved agent sends one answer per `ping` or `shutdown`.
pub const MAX_PENDING_CONTROL: usize = 32;
/// Bytes of data frames queued for the socket before senders wait.
pub const OUT_DATA_BUDGET: usize = 1 << 20;
/// Bytes of control frames queued for the socket before the agent is cut
/// off as not reading. Credits are ~40 bytes per half window consumed, so
/// a reading agent never comes near it.
pub const OUT_CONTROL_LIMIT: usize = 1 << 20;

/// How a connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Serving.
    Open,
    /// The agent ended it, or the host dropped its last handle.
    Closed,
    /// The host cut the agent off for breaking a bound: why.
    CutOff(String),
}

/// The connection's state, shared by its tasks and handles.
#[derive(Debug)]
pub(crate) struct Guard {
    state: watch::Sender<ConnState>,
}

impl Guard {
    pub(crate) fn new() -> Self {
        Self {
            state: watch::Sender::new(ConnState::Open),
        }
    }

    /// Ends the connection for `reason` (the first reason wins).
    pub(crate) fn cut_off(&self, reason: String) {
        self.state.send_if_modified(|s| {
            if *s == ConnState::Open {
                *s = ConnState::CutOff(reason);
                true
            } else {
                false
            }
        });
    }

    /// Marks a connection that ended by itself.
    pub(crate) fn closed(&self) {
        self.state.send_if_modified(|s| {
            if *s == ConnState::Open {
                *s = ConnState::Closed;
                true
            } else {
                false
            }
        });
    }

    /// The error a caller of an ended connection gets.
    pub(crate) fn error(&self) -> ClientError {
        match &*self.state.borrow() {
            ConnState::CutOff(reason) => ClientError::CutOff(reason.clone()),
            _ => ClientError::Closed,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ConnState> {
        self.state.subscribe()
    }

    /// Resolves once the connection is no longer open.
    pub(crate) async fn ended(rx: &mut watch::Receiver<ConnState>) {
        let _ = rx.wait_for(|s| *s != ConnState::Open).await;
    }
}

/// Watches a connection without keeping it open: the daemon holds one per
/// VM to log and show why an agent was cut off.
#[derive(Debug, Clone)]
pub struct EndWatch(pub(crate) watch::Receiver<ConnState>);

impl EndWatch {
    /// Waits until the connection ends; the reason when it was cut off.
    pub async fn ended(mut self) -> Option<String> {
        Guard::ended(&mut self.0).await;
        match &*self.0.borrow() {
            ConnState::CutOff(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// The state now.
    pub fn state(&self) -> ConnState {
        self.0.borrow().clone()
    }
}

/// One frame for the socket; `data` is the payload bytes it holds of the
/// data budget (0 for a control frame).
pub(crate) struct Outgoing {
    pub(crate) buf: Vec<u8>,
    pub(crate) data: u32,
}

/// The queue of frames for the socket, with its two bounds.
pub(crate) struct Outbox {
    tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    data_budget: Semaphore,
    control_bytes: AtomicUsize,
}

impl Outbox {
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Self {
            tx: Mutex::new(Some(tx)),
            data_budget: Semaphore::new(OUT_DATA_BUDGET),
            control_bytes: AtomicUsize::new(0),
        };
        (outbox, rx)
    }

    fn push(&self, frame: Outgoing) -> bool {
        let tx = super::lock(&self.tx);
        tx.as_ref().is_some_and(|tx| tx.send(frame).is_ok())
    }

    /// Queues a control frame; `false` when the connection is over. Past
    /// [`OUT_CONTROL_LIMIT`] queued, `guard` cuts the agent off.
    pub(crate) fn control(&self, buf: Vec<u8>, guard: &Guard) -> bool {
        let queued = self.control_bytes.fetch_add(buf.len(), Ordering::AcqRel) + buf.len();
        if queued > OUT_CONTROL_LIMIT {
            guard.cut_off(format!(
                "the agent stopped reading: more than {} KiB of control frames waited for it",
                OUT_CONTROL_LIMIT / 1024
            ));
            self.close();
            return false;
        }
        self.push(Outgoing { buf, data: 0 })
    }

    /// Queues a data frame carrying `payload` bytes, waiting while
    /// [`OUT_DATA_BUDGET`] bytes are queued; `false` when the connection is
    /// over.
    pub(crate) async fn data(&self, buf: Vec<u8>, payload: usize) -> bool {
        let n = u32::try_from(payload).unwrap_or(u32::MAX);
        match self.data_budget.acquire_many(n).await {
            // Given back by the writer once the frame is on the socket.
            Ok(permit) => permit.forget(),
            Err(_) => return false,
        }
        self.push(Outgoing { buf, data: n })
    }

    /// The writer put `frame` on the socket.
    pub(crate) fn written(&self, frame: &Outgoing) {
        if frame.data > 0 {
            self.data_budget.add_permits(frame.data as usize);
        } else {
            self.control_bytes
                .fetch_sub(frame.buf.len(), Ordering::AcqRel);
        }
    }

    /// No more frames: wakes every waiting sender.
    pub(crate) fn close(&self) {
        super::lock(&self.tx).take();
        self.data_budget.close();
    }

    #[cfg(test)]
    pub(crate) fn data_queued(&self) -> usize {
        OUT_DATA_BUDGET - self.data_budget.available_permits()
    }
}
