//! Per-stream credit windows: the accounting both ends use, with no I/O.
//!
//! Every stream has one window per direction. The receiver of a stream's
//! data frames starts by allowing [`INITIAL_WINDOW`] bytes and, as its
//! consumer drains them, grants more with [`crate::Message::Credit`]; the
//! sender never has more than the window in flight. So whatever the
//! consumer's speed, at most a window per stream is buffered at the
//! receiver, and a stalled stream only stops itself: the connection keeps
//! carrying the other streams (as SSH channels and HTTP/2 streams do).
//!
//! The same logic runs on std threads in the agent and under tokio on the
//! host, so it lives here as plain state machines.

/// Bytes a sender may have in flight on a new stream before any credit.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Largest data chunk anyone sends in one frame.
pub const MAX_CHUNK: usize = 32 * 1024;

/// The peer sent more data than it was allowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("flow control: peer sent {got} bytes with only {allowed} allowed")]
pub struct WindowExceeded {
    /// Bytes that arrived.
    pub got: u64,
    /// What the window allowed at that point.
    pub allowed: u64,
}

/// The sending side: how much the peer still lets us send.
#[derive(Debug, Clone)]
pub struct SendWindow {
    avail: u64,
}

impl SendWindow {
    /// A fresh stream's window.
    pub fn new(initial: u32) -> Self {
        Self {
            avail: u64::from(initial),
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.avail
    }

    /// Takes up to `want` bytes of the window; 0 means wait for credit.
    pub fn reserve(&mut self, want: usize) -> usize {
        let n = usize::try_from(self.avail).unwrap_or(usize::MAX).min(want);
        self.avail -= n as u64;
        n
    }

    /// Gives back bytes reserved but not sent (a short read).
    pub fn unreserve(&mut self, n: usize) {
        self.avail += n as u64;
    }

    /// Credit from the receiver.
    pub fn grant(&mut self, bytes: u32) {
        self.avail = self.avail.saturating_add(u64::from(bytes));
    }
}

/// The receiving side: checks the peer keeps to the window, and decides
/// when consumed bytes are worth a `Credit` message.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    /// What the sender may still send before it needs more credit.
    allowed: u64,
    /// Consumed since the last credit we sent.
    unacked: u64,
}

impl RecvWindow {
    /// A fresh stream's window of `window` bytes.
    pub fn new(window: u32) -> Self {
        Self {
            window,
            allowed: u64::from(window),
            unacked: 0,
        }
    }

    /// `n` bytes arrived; an error when the sender overran its window.
    pub fn received(&mut self, n: usize) -> Result<(), WindowExceeded> {
        let n = n as u64;
        if n > self.allowed {
            return Err(WindowExceeded {
                got: n,
                allowed: self.allowed,
            });
        }
        self.allowed -= n;
        Ok(())
    }

    /// The consumer is done with `n` bytes. Returns the credit to send, once
    /// at least half the window has been consumed: batching keeps credits to
    /// a couple per window. The sender can never be stuck waiting: while
    /// less than half is unacknowledged it still has over half to spend.
    pub fn consumed(&mut self, n: usize) -> Option<u32> {
        self.unacked += n as u64;
        if self.unacked * 2 < u64::from(self.window) {
            return None;
        }
        let grant = u32::try_from(self.unacked).unwrap_or(u32::MAX);
        self.unacked -= u64::from(grant);
        self.allowed += u64::from(grant);
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sender_stops_at_the_window_and_resumes_on_credit() {
        let mut w = SendWindow::new(100);
        assert_eq!(w.reserve(60), 60);
        assert_eq!(w.reserve(60), 40);
        assert_eq!(w.reserve(1), 0, "window used up");
        w.unreserve(10);
        assert_eq!(w.reserve(20), 10);
        w.grant(30);
        assert_eq!(w.available(), 30);
        assert_eq!(w.reserve(100), 30);
    }

    #[test]
    fn receiver_refuses_an_overrun() {
        let mut r = RecvWindow::new(100);
        r.received(100).unwrap();
        assert_eq!(r.received(1), Err(WindowExceeded { got: 1, allowed: 0 }));
    }

    #[test]
    fn credits_are_batched_to_half_a_window() {
        let mut r = RecvWindow::new(100);
        r.received(100).unwrap();
        assert_eq!(r.consumed(30), None);
        assert_eq!(r.consumed(20), Some(50));
        r.received(50).unwrap();
        assert!(r.received(1).is_err(), "only the credited 50 were allowed");
        assert_eq!(r.consumed(49), None);
        assert_eq!(r.consumed(1), Some(50));
    }

    proptest! {
        /// A sender and a receiver following the rules, with the consumer
        /// draining in arbitrary steps: the receiver never holds more than
        /// the window, never sees an overrun, and everything gets through.
        #[test]
        fn window_bounds_the_buffer_and_never_deadlocks(
            window in 1u32..4096,
            total in 0usize..100_000,
            steps in prop::collection::vec((1usize..5000, 1usize..5000), 1..50),
        ) {
            let mut s = SendWindow::new(window);
            let mut r = RecvWindow::new(window);
            let (mut sent, mut buffered, mut delivered) = (0usize, 0usize, 0usize);
            let mut i = 0;
            while delivered < total {
                let (chunk, drain) = steps[i % steps.len()];
                i += 1;
                let n = s.reserve(chunk.min(total - sent));
                r.received(n).unwrap();
                sent += n;
                buffered += n;
                prop_assert!(buffered <= window as usize);
                let d = drain.min(buffered);
                buffered -= d;
                delivered += d;
                if let Some(c) = r.consumed(d) {
                    s.grant(c);
                }
                // Progress: either something is buffered to drain, or the
                // sender can send.
                prop_assert!(buffered > 0 || sent == total || s.available() > 0);
                prop_assert!(i < 1_000_000);
            }
            prop_assert_eq!(sent, total);
        }
    }
}
