//! `tcp_connect`: a TCP connection inside the guest spliced to a stream,
//! for `vm proxy` (an ssh ProxyCommand) and `vm forward`, with no network
//! between host and guest.
//!
//! Two threads per connection: this one pumps socket -> host within the
//! host's window; a writer pumps host -> socket and credits the host as it
//! writes. Each direction half-closes on its own: the host's `stdin_close`
//! becomes `shutdown(SHUT_WR)`, the guest's EOF becomes `eof`. `done` comes
//! once both directions have ended.

use std::io::Write;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use banger_proto::{FrameKind, Message};

use crate::streams::{self, PumpState, Stream, reply};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(st: Stream, port: u16, host: Option<String>) {
    let host = host.unwrap_or_else(|| "127.0.0.1".to_owned());
    let sock = match connect(&host, port) {
        Ok(s) => s,
        Err(e) => {
            streams::forget(&st.table, st.id);
            let where_ = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            return reply(
                &st.sink,
                st.id,
                Message::Error {
                    message: format!("connect to {where_} in the guest: {e}"),
                },
            );
        }
    };
    let _ = sock.set_nodelay(true);
    let (Ok(reader), Ok(writer), Ok(closer)) =
        (sock.try_clone(), sock.try_clone(), sock.try_clone())
    else {
        streams::forget(&st.table, st.id);
        return reply(
            &st.sink,
            st.id,
            Message::Error {
                message: "dup socket: out of file descriptors".into(),
            },
        );
    };
    // An abort (or the session ending) closes both directions, which ends
    // both threads.
    match streams::lock(&st.table).get_mut(&st.id) {
        Some(ctl) => {
            ctl.on_abort = Some(Box::new(move || {
                let _ = closer.shutdown(Shutdown::Both);
            }))
        }
        None => return,
    }
    reply(&st.sink, st.id, Message::Opened);

    let Stream {
        id,
        sink,
        table,
        flow,
        input,
    } = st;
    let up = {
        let (sink, flow) = (sink.clone(), flow.clone());
        std::thread::spawn(move || {
            let mut w = writer;
            while let Ok(Some(data)) = input.recv() {
                if w.write_all(&data).is_err() {
                    break;
                }
                flow.consumed(data.len(), id, &sink);
            }
            let _ = w.shutdown(Shutdown::Write);
        })
    };
    let state = PumpState::default();
    let down = streams::pump_out(reader, FrameKind::Stdout, id, &sink, &flow, &state);
    let aborted = flow.is_closed();
    match down {
        Ok(()) if !aborted => reply(&sink, id, Message::Eof),
        Ok(()) => {}
        Err(e) => {
            // A reset: the other direction is over as well.
            let _ = sock.shutdown(Shutdown::Both);
            streams::forget(&table, id);
            return reply(
                &sink,
                id,
                Message::Error {
                    message: format!("guest connection to port {port}: {e}"),
                },
            );
        }
    }
    let _ = up.join();
    streams::forget(&table, id);
    if !aborted {
        reply(&sink, id, Message::Done);
    }
}

fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}
