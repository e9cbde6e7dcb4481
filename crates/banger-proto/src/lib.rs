//! The host<->agent protocol: wire types, framing and the host-side client.
//!
//! One byte stream (a virtio-serial port under QEMU, a hybrid-vsock Unix
//! socket under Firecracker, AF_VSOCK inside the guest) carries many
//! concurrent exec sessions. Everything on it is a [`Frame`]:
//!
//! ```text
//! +----------------+----------------+--------+-----------------------+
//! | len: u32 BE    | stream: u32 BE | kind:u8| payload (len - 5 B)   |
//! +----------------+----------------+--------+-----------------------+
//! ```
//!
//! `len` counts everything after itself. `stream` is 0 for connection-level
//! messages (hello, ping, shutdown) and the exec id chosen by the host for an
//! exec session. `kind` says how to read the payload:
//!
//! * [`FrameKind::Control`]: a JSON-encoded [`Message`].
//! * [`FrameKind::Stdout`] / [`FrameKind::Stderr`] / [`FrameKind::Stdin`]: raw
//!   bytes of that exec's standard stream.
//!
//! Why this split: control messages are rare, small and must evolve (new
//! optional fields, new variants), so they are JSON — readable in a hex dump,
//! tolerant of additive change, and serde_json is already on both sides. Data
//! chunks are the hot path and arbitrary bytes; JSON would force base64 or
//! number arrays, so they travel raw behind the 9-byte header. The framing is
//! transport-agnostic: after a Firecracker `CONNECT 1024\n` / `OK n\n`
//! preamble, the stream is exactly the same as on the serial port.
//!
//! Versioning: [`PROTOCOL_VERSION`] is exchanged in `Hello`/`Ready`. Additive
//! changes (a new optional field, a new message the peer may ignore) keep it;
//! anything else bumps it. `tests/schema_snapshot.rs` pins the JSON shape of
//! every message so a wire change shows up as a diff in review.
//!
//! This crate does not spawn processes or know about VMMs. The blocking codec
//! ([`read_frame`], [`write_frame`]) is what the static guest agent uses; the
//! async [`client`] (feature `client`) is what the host uses.

mod frame;
mod message;

#[cfg(feature = "client")]
pub mod client;

pub use frame::{Frame, FrameError, FrameKind, MAX_FRAME_LEN, read_frame, write_frame};
pub use message::{ExecRequest, ExitStatus, Message, TtySize};

/// Version of the wire protocol, exchanged in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// The stream id of connection-level control messages.
pub const CONTROL_STREAM: u32 = 0;

/// Name of the virtio-serial port the agent listens on (QEMU).
pub const VIRTIO_PORT_NAME: &str = "banger.agent";

/// AF_VSOCK port the agent listens on (Firecracker hybrid vsock, vhost-vsock).
pub const VSOCK_PORT: u32 = 1024;
