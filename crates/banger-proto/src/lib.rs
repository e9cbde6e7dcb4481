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
//! messages (hello, ping, shutdown) and otherwise an id the host chose when
//! it opened the stream with its first message: `exec`, `tcp_connect`,
//! `copy_in`, `copy_out`, `ports` or `stats`. `kind` says how to read the
//! payload:
//!
//! * [`FrameKind::Control`]: a JSON-encoded [`Message`].
//! * [`FrameKind::Stdout`] / [`FrameKind::Stderr`] / [`FrameKind::Stdin`]: raw
//!   bytes: an exec's standard streams; for the other streams, agent->host
//!   data is `Stdout` and host->agent data is `Stdin`.
//!
//! Why this split: control messages are rare, small and must evolve (new
//! optional fields, new variants), so they are JSON — readable in a hex dump,
//! tolerant of additive change, and serde_json is already on both sides. Data
//! chunks are the hot path and arbitrary bytes; JSON would force base64 or
//! number arrays, so they travel raw behind the 9-byte header. The framing is
//! transport-agnostic: after a Firecracker `CONNECT 1024\n` / `OK n\n`
//! preamble, the stream is exactly the same as on the serial port.
//!
//! Flow control: every stream has a credit window per direction
//! ([`flow`]): a sender stops when its window is spent and the receiver
//! grants more with `credit` as its consumer drains. The agent stops reading
//! the child's pipe or the guest socket, so the producer blocks, and memory
//! stays bounded at every hop whatever the reader's speed, while the other
//! streams of the connection keep moving.
//!
//! Compatibility rule (VMs outlive daemon upgrades, so a daemon meets agents
//! older than itself):
//!
//! * [`PROTOCOL_VERSION`] is the major version, exchanged in `Hello`/`Ready`.
//!   It must match exactly; it changes only for a change an old peer would
//!   misread (a changed field, frame layout or meaning).
//! * Within a major, features are *capabilities* ([`caps`]): `Ready` lists
//!   the agent's and `Hello` the host's. A peer sends a feature's messages
//!   only when the other side listed it, so an old agent is never sent a
//!   message it cannot parse, and the host tells the user which feature the
//!   VM's agent lacks (`client::ClientError::Unsupported`) instead of
//!   failing the connection. An agent whose `Ready` has no list is one from
//!   before lists existed: [`caps::BASE`].
//! * Adding an optional field, a message or a capability keeps the major.
//!   Unknown fields are ignored; an unknown message is answered `error` on
//!   its stream and the connection goes on.
//! * Flow control is not optional for the host: it refuses an agent whose
//!   `Ready` lacks `flow_control` (every agent since the capability lists
//!   has it), since without windows a guest could make it buffer without
//!   limit. The agent still serves a host that does not list it.
//!
//! `tests/schema_snapshot.rs` pins the JSON shape of every message so a wire
//! change shows up as a diff in review.
//!
//! This crate does not spawn processes or know about VMMs. The blocking codec
//! ([`read_frame`], [`write_frame`]) is what the static guest agent uses; the
//! async [`client`] (feature `client`) is what the host uses.

pub mod boot_params;
pub mod flow;
mod frame;
pub mod land;
mod message;

#[cfg(feature = "client")]
pub mod client;

pub use frame::{Frame, FrameError, FrameKind, MAX_FRAME_LEN, read_frame, write_frame};
pub use message::{
    CpuTimes, DiskUsage, ExecRequest, ExitStatus, GuestIdentity, GuestNet, GuestStats,
    ListeningPort, MemoryStats, Message, TtySize,
};

/// Capability names, as listed in `Hello` and `Ready`.
pub mod caps {
    /// `exec` streams without a terminal.
    pub const EXEC: &str = "exec";
    /// `exec` with `tty`, `resize`.
    pub const PTY: &str = "pty";
    /// Credit windows on every stream ([`crate::flow`]).
    pub const FLOW_CONTROL: &str = "flow_control";
    /// `tcp_connect` streams.
    pub const TCP_CONNECT: &str = "tcp_connect";
    /// `copy_in` and `copy_out` streams.
    pub const FILE_COPY: &str = "file_copy";
    /// The `ports` request.
    pub const PORTS: &str = "ports";
    /// The `stats` request.
    pub const STATS: &str = "stats";
    /// `copy_out` with `one_file_system` (`image commit`).
    pub const COPY_ONE_FS: &str = "copy_one_fs";
    /// The `identity` request (after a snapshot restore).
    pub const IDENTITY: &str = "identity";
    /// The `set_clock` request (after a resume or a wake).
    pub const CLOCK: &str = "clock";
    /// `not_started` for an exec whose program is missing or not
    /// executable (exit 127 / 126, as a shell reports them).
    pub const EXEC_NOT_STARTED: &str = "exec_not_started";

    /// What an agent whose `Ready` carries no list can do.
    pub const BASE: &[&str] = &[EXEC, PTY];
    /// What this crate's agent can do.
    pub const AGENT: &[&str] = &[
        EXEC,
        PTY,
        FLOW_CONTROL,
        TCP_CONNECT,
        FILE_COPY,
        PORTS,
        STATS,
        COPY_ONE_FS,
        IDENTITY,
        CLOCK,
        EXEC_NOT_STARTED,
    ];
    /// What this crate's host client does.
    pub const HOST: &[&str] = &[FLOW_CONTROL, EXEC_NOT_STARTED];
}

/// Version of the wire protocol, exchanged in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// The stream id of connection-level control messages.
pub const CONTROL_STREAM: u32 = 0;

/// Name of the virtio-serial port the agent listens on (QEMU).
pub const VIRTIO_PORT_NAME: &str = "banger.agent";

/// AF_VSOCK port the agent listens on (Firecracker hybrid vsock, vhost-vsock).
pub const VSOCK_PORT: u32 = 1024;
