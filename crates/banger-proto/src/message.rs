//! Control messages, JSON-encoded inside [`crate::FrameKind::Control`] frames.

use serde::{Deserialize, Serialize};

/// Every control message of the protocol, in both directions.
///
/// One enum rather than one per direction keeps the snapshot test and the
/// decoder in one place; each variant's doc says who sends it.
///
/// Readers are tolerant: unknown fields are ignored, so a peer may add an
/// optional field without a version bump. An unknown message *type* fails
/// to decode as [`crate::FrameError::Decode`], which names the stream, so
/// the receiver can answer `Error` on it and keep the connection. Messages on
/// stream 0 concern the connection; all others concern the exec whose id is
/// the frame's stream id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Host -> agent, first message on a connection.
    Hello {
        /// The host's protocol version.
        protocol_version: u32,
    },
    /// Agent -> host, answer to `Hello`.
    Ready {
        /// The agent's crate version, for `banger doctor` and logs.
        agent_version: String,
        /// The agent's protocol version; the host refuses a mismatch.
        protocol_version: u32,
    },
    /// Host -> agent liveness probe.
    Ping {
        /// Echoed back in `Pong`.
        nonce: u64,
    },
    /// Agent -> host answer to `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// Host -> agent: start a process; the frame's stream id is the exec id.
    Exec(ExecRequest),
    /// Agent -> host: the process runs.
    Started {
        /// Its pid in the guest.
        pid: u32,
    },
    /// Host -> agent: no more stdin for this exec.
    StdinClose,
    /// Host -> agent: the terminal of a tty exec changed size.
    Resize(TtySize),
    /// Host -> agent: deliver a signal to the exec's process.
    Signal {
        /// Signal number, as in the guest's kill(2).
        signal: i32,
    },
    /// Agent -> host: the process ended; all its output was sent before.
    Exited(ExitStatus),
    /// Agent -> host: the request on this stream failed (spawn error, unknown
    /// stream, bad message). Ends the exec when sent on an exec stream.
    Error {
        /// Human-readable cause.
        message: String,
    },
    /// Host -> agent: sync, unmount and power off (or reboot) the guest.
    Shutdown {
        /// Reboot instead of power off.
        reboot: bool,
    },
    /// Agent -> host: shutdown accepted; the connection ends soon after.
    ShutdownAck,
}

/// What to run, inside [`Message::Exec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment, applied over the agent's default: `PATH`; `HOME`,
    /// the user's home (`/root` when `user` is absent); `USER` and
    /// `LOGNAME` when the user has a passwd entry; `TERM` for a tty.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory; when absent, the user's home directory if it
    /// exists (`/root` for root), else `/`.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Who to run as, in the OCI image config's `User` syntax: `user` or
    /// `user:group`, each a name (looked up in the guest's `/etc/passwd`
    /// and `/etc/group`) or a number. Absent or empty: root, with the
    /// agent's own groups.
    #[serde(default)]
    pub user: Option<String>,
    /// Run on a pseudo-terminal of this size; output then arrives on stdout
    /// only.
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// Whether the host will send stdin. When false, stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum ExitStatus {
    /// Normal exit with this code.
    Code {
        /// The exit code.
        code: i32,
    },
    /// Killed by this signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code { code } => code,
            ExitStatus::Signaled { signal } => 128 + signal,
        }
    }

    /// True for a zero exit code.
    pub fn success(self) -> bool {
        self == ExitStatus::Code { code: 0 }
    }
}
