//! Boot templates: a guest that stops in the initramfs, before anything
//! per-VM is bound, and waits for the host to say who it is.
//!
//! With `banger.template=1` the agent loads every module but the drivers
//! of per-VM devices ([`AFTER_IDENTITY`]: block and network), answers the
//! host's hello, and waits for one [`GuestIdentity`]. The host saves the
//! VM's state at that point; every warm start restores that state with its
//! own disks and NIC, then sends the identity. Only then are the block and
//! network drivers loaded, so they probe this VM's disks (and read their
//! sizes) and this VM's NIC, exactly as a cold boot would.
//!
//! Single-threaded on purpose: PID 1 forks later to exec the image's
//! init, which needs a process with no other threads.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use banger_proto::{
    CONTROL_STREAM, Frame, GuestIdentity, Message, PROTOCOL_VERSION, caps, read_frame, write_frame,
};

use crate::transport::{self, Port};

/// Modules that must load only after the identity arrives: drivers of the
/// devices that differ per VM (its disks, its NIC), which read their
/// configuration (a disk's capacity, the MAC) when they probe. Everything
/// else (the channel to the host, filesystems, the balloon) loads before
/// the wait, so a warm start does not pay for it and every VM of the
/// template shares those pages. Names as the kernel spells module files,
/// `_` for `-`.
pub const AFTER_IDENTITY: &[&str] = &["virtio_blk", "virtio_net", "net_failover", "failover"];

/// Whether the template loads `module` before it waits (see
/// [`AFTER_IDENTITY`]); `skip` is the command line's `banger.nomodules`.
pub fn loads_before_identity(module: &str, skip: &[String]) -> bool {
    !AFTER_IDENTITY.contains(&module) && !skip.iter().any(|s| s == module)
}

/// Serves hellos on the virtio-serial port until the host sends an
/// identity; returns it with the still-open port (the console driver lets
/// one opener at a time, so the serving loop takes this one over).
pub fn wait_for_identity() -> (GuestIdentity, Port) {
    let Some(path) = transport::find_virtio_port(Duration::from_secs(30)) else {
        crate::fatal("template", "no virtio-serial port named banger.agent");
    };
    let port =
        Port::open(&path).unwrap_or_else(|e| crate::fatal(&format!("open {}", path.display()), e));
    crate::log("template: waiting for an identity");
    loop {
        if let Err(e) = port.wait_for_host() {
            crate::log(&format!("port poll: {e}"));
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if let Some(id) = one_session(&port) {
            return (id, port);
        }
    }
}

/// One host connection: hello, then requests until an identity arrives
/// (`Some`) or the host goes away (`None`).
fn one_session(port: &Port) -> Option<GuestIdentity> {
    let mut r = port.reader();
    let mut w = port.writer(Arc::new(AtomicBool::new(true)));
    let mut send = |stream: u32, message: Message| {
        let _ = write_frame(&mut w, &Frame::control(stream, message));
    };
    loop {
        let frame = match read_frame(&mut r) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                crate::log(&format!("template session ends: {e}"));
                return None;
            }
        };
        match frame {
            Frame::Control {
                stream: CONTROL_STREAM,
                message: Message::Hello { .. },
            } => send(
                CONTROL_STREAM,
                Message::Ready {
                    agent_version: env!("CARGO_PKG_VERSION").into(),
                    protocol_version: PROTOCOL_VERSION,
                    capabilities: caps::AGENT.iter().map(|c| (*c).to_owned()).collect(),
                },
            ),
            Frame::Control {
                stream: CONTROL_STREAM,
                message: Message::Ping { nonce },
            } => send(CONTROL_STREAM, Message::Pong { nonce }),
            Frame::Control {
                stream,
                message: Message::Identity(id),
            } => {
                // Clock and entropy first: whatever runs next (module
                // init, fsck, the image's init) must not see the
                // template's time or random state.
                let answer = match crate::identity::fresh_time_and_entropy(&id) {
                    Ok(()) => Message::IdentitySet,
                    Err(e) => Message::Error {
                        message: format!("take the new identity: {e}"),
                    },
                };
                let ok = matches!(answer, Message::IdentitySet);
                send(stream, answer);
                if ok {
                    return Some(id);
                }
            }
            // Nothing else exists yet: no root, no processes to run.
            Frame::Control { stream, .. } if stream != CONTROL_STREAM => send(
                stream,
                Message::Error {
                    message: "the guest is a boot template waiting for its identity".into(),
                },
            ),
            _ => {}
        }
    }
}
