//! The agent's side of per-stream flow control, on std threads.
//!
//! Outbound, a pump thread asks [`Flow::reserve`] before it reads the
//! child's pipe or the guest socket, and blocks while the host's window is
//! spent: the pipe fills and the producer blocks, so nothing accumulates
//! in the agent. Inbound, the session thread checks each data frame with
//! [`Flow::received`] and queues it (at most a window per stream), and the
//! consumer credits the host with [`Flow::consumed`] as it writes the bytes
//! out. The session thread itself never waits on a stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use banger_proto::flow::{INITIAL_WINDOW, RecvWindow, SendWindow, WindowExceeded};
use banger_proto::{Frame, Message};

use crate::transport::Sink;

/// One stream's windows. With a host that did not list `flow_control`,
/// `enabled` is false and nothing limits (the host would never grant).
#[derive(Debug)]
pub struct Flow {
    enabled: bool,
    send: Mutex<SendWindow>,
    credit: Condvar,
    recv: Mutex<RecvWindow>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is a few arithmetic steps: poisoning cannot
    // leave a window half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flow {
    pub fn new(enabled: bool) -> Flow {
        Flow {
            enabled,
            send: Mutex::new(SendWindow::new(INITIAL_WINDOW)),
            credit: Condvar::new(),
            recv: Mutex::new(RecvWindow::new(INITIAL_WINDOW)),
            closed: AtomicBool::new(false),
        }
    }

    /// Blocks until up to `want` bytes may be sent; `None` once the stream
    /// is closed (ended, aborted, or its session gone).
    pub fn reserve(&self, want: usize) -> Option<usize> {
        if !self.enabled {
            return (!self.is_closed()).then_some(want);
        }
        let mut w = lock(&self.send);
        loop {
            if self.is_closed() {
                return None;
            }
            let n = w.reserve(want);
            if n > 0 {
                return Some(n);
            }
            w = self.credit.wait(w).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns bytes reserved but not sent.
    pub fn unreserve(&self, n: usize) {
        if self.enabled && n > 0 {
            lock(&self.send).unreserve(n);
        }
    }

    /// Credit from the host.
    pub fn grant(&self, bytes: u32) {
        lock(&self.send).grant(bytes);
        self.credit.notify_all();
    }

    /// Wakes and stops every waiter for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Taking the lock orders the store before a waiter's check.
        drop(lock(&self.send));
        self.credit.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `n` bytes arrived from the host on this stream.
    pub fn received(&self, n: usize) -> Result<(), WindowExceeded> {
        if !self.enabled {
            return Ok(());
        }
        lock(&self.recv).received(n)
    }

    /// `n` inbound bytes were written out: credit the host when due.
    pub fn consumed(&self, n: usize, id: u32, sink: &Sink) {
        if !self.enabled || self.is_closed() {
            return;
        }
        let grant = lock(&self.recv).consumed(n);
        if let Some(bytes) = grant {
            let _ = sink.send(&Frame::control(id, Message::Credit { bytes }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn reserve_blocks_until_credit_or_close() {
        let f = Arc::new(Flow::new(true));
        assert_eq!(
            f.reserve(INITIAL_WINDOW as usize),
            Some(INITIAL_WINDOW as usize)
        );
        let g = f.clone();
        let t = std::thread::spawn(move || g.reserve(10));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished(), "reserved past the window");
        f.grant(4);
        assert_eq!(t.join().unwrap(), Some(4));
        let g = f.clone();
        let t = std::thread::spawn(move || g.reserve(10));
        std::thread::sleep(Duration::from_millis(50));
        f.close();
        assert_eq!(t.join().unwrap(), None, "close wakes the waiter");
    }

    #[test]
    fn without_flow_control_nothing_limits() {
        let f = Flow::new(false);
        for _ in 0..100 {
            assert_eq!(f.reserve(1 << 20), Some(1 << 20));
            f.received(1 << 20).unwrap();
        }
    }
}
