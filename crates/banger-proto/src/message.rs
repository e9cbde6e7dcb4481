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
        /// What the host does (see [`crate::caps`]); a host that lists
        /// `flow_control` grants credit, so the agent keeps to windows.
        #[serde(default)]
        capabilities: Vec<String>,
    },
    /// Agent -> host, answer to `Hello`.
    Ready {
        /// The agent's crate version, for `banger doctor` and logs.
        agent_version: String,
        /// The agent's protocol version; the host refuses a mismatch.
        protocol_version: u32,
        /// What the agent can do (see [`crate::caps`]). Absent in agents
        /// older than the list, which read as [`crate::caps::BASE`].
        #[serde(default)]
        capabilities: Vec<String>,
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
    /// Host -> agent: no more data from the host on this stream (stdin of
    /// an exec; the write half of a TCP connection; the end of a tar
    /// stream).
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
    /// Agent -> host: the exec's program could not be started, and a shell
    /// would have said so with `exit_code`: 127 when it is not found, 126
    /// when it cannot be executed. Ends the exec (capability
    /// `exec_not_started`; without it the agent sends `error`).
    NotStarted {
        /// What is wrong, naming the program.
        message: String,
        /// The exit code a shell reports for it.
        exit_code: i32,
    },
    /// Host -> agent: sync, unmount and power off (or reboot) the guest.
    Shutdown {
        /// Reboot instead of power off.
        reboot: bool,
    },
    /// Agent -> host: shutdown accepted; the connection ends soon after.
    ShutdownAck,
    /// Either direction: the sender of this stream's data may send `bytes`
    /// more (see [`crate::flow`]). Only between peers that both list
    /// `flow_control`.
    Credit {
        /// Bytes added to the window.
        bytes: u32,
    },
    /// Host -> agent: connect to a TCP port inside the guest and splice it
    /// to this stream (capability `tcp_connect`). Host data goes to the
    /// socket, socket data comes back as stdout frames.
    TcpConnect {
        /// The guest port.
        port: u16,
        /// The guest address to connect to; 127.0.0.1 when absent.
        #[serde(default)]
        host: Option<String>,
    },
    /// Host -> agent: unpack the tar stream that follows (stdin frames,
    /// then `stdin_close`) under `dest`, created if missing, keeping
    /// modes, owners, symlinks and mtimes; no entry may land outside
    /// `dest` (capability `file_copy`). Ends with `done` or `error`.
    CopyIn {
        /// Absolute directory in the guest.
        dest: String,
    },
    /// Host -> agent: send a tar of `path` (stdout frames, then `eof` and
    /// `done`, or `error`); the archive's top entry is `path`'s last
    /// component (capability `file_copy`).
    CopyOut {
        /// Absolute path in the guest: a file, directory or symlink.
        path: String,
        /// Stay on `path`'s filesystem, as `tar --one-file-system`: a
        /// directory on another mount is sent, its contents are not
        /// (capability `copy_one_fs`; an agent without it sends them).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        one_file_system: bool,
    },
    /// Host -> agent: list the guest's listening sockets; answered by
    /// `port_list` on the same stream (capability `ports`).
    Ports,
    /// Host -> agent: report resource usage; answered by `stats_report` on
    /// the same stream (capability `stats`).
    Stats,
    /// Agent -> host: a `tcp_connect`, `copy_in` or `copy_out` stream is
    /// under way (connected; target checked).
    Opened,
    /// Agent -> host: no more data from the agent on this stream (the
    /// guest side closed its write half; the tar is complete).
    Eof,
    /// Agent -> host: the stream's operation finished successfully; ends
    /// the stream.
    Done,
    /// Host -> agent: abandon this stream now (close its socket, stop its
    /// copy). No answer.
    Abort,
    /// Agent -> host: answer to `ports`.
    PortList {
        /// One entry per listening socket.
        ports: Vec<ListeningPort>,
    },
    /// Agent -> host: answer to `stats`.
    StatsReport(GuestStats),
    /// Host -> agent, after the guest was restored from a snapshot: who the
    /// guest is now (capability `identity`). Answered `identity_set` on the
    /// same stream, or `error` naming what could not be applied.
    Identity(GuestIdentity),
    /// Agent -> host: answer to `identity`; everything was applied.
    IdentitySet,
    /// Host -> agent: step the guest's wall clock to the host's, sent
    /// when the guest runs again after its clock stood still (a resume
    /// from `vm pause`, a wake from suspend). Capability `clock`; answered
    /// `clock_set` on the same stream, or `error`.
    SetClock {
        /// Host wall clock when sent, nanoseconds since the Unix epoch.
        realtime_ns: u64,
    },
    /// Agent -> host: answer to `set_clock`: the guest's clock before the
    /// step, so the host can say how far it had fallen behind.
    ClockSet {
        /// The guest's wall clock just before it was stepped, ns since the
        /// Unix epoch.
        was_ns: u64,
    },
}

/// Who a restored guest is now, inside [`Message::Identity`]. The saved
/// state carries the identity of the VM it was taken of, and a fork must
/// neither answer to that name nor share its random state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestIdentity {
    /// The kernel hostname (`sethostname`).
    pub hostname: String,
    /// Host wall clock, nanoseconds since the Unix epoch: the saved clock
    /// is as old as the snapshot.
    pub realtime_ns: u64,
    /// Fresh random bytes, hex, mixed into the guest's pool with
    /// `RNDADDENTROPY` (and credited), so two restores of one snapshot
    /// draw different random numbers.
    pub entropy_hex: String,
    /// The NIC, when the VM has one: the MAC its new tap expects and the
    /// address the VM was allocated.
    #[serde(default)]
    pub net: Option<GuestNet>,
}

/// Network identity of a restored guest's `eth0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    /// `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Address with prefix, `172.16.0.3/24`.
    pub address: String,
    /// Default gateway (also the resolver, written by the host in
    /// `/etc/resolv.conf`).
    pub gateway: String,
}

/// A listening socket in the guest, from `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListeningPort {
    /// `tcp`, `tcp6`, `udp` or `udp6`.
    pub proto: String,
    /// The local address (`0.0.0.0`, `::`, `127.0.0.1`...).
    pub address: String,
    /// The local port.
    pub port: u16,
    /// The process holding the socket, when one was found.
    #[serde(default)]
    pub pid: Option<u32>,
    /// That process's name (`/proc/PID/comm`).
    #[serde(default)]
    pub process: Option<String>,
}

/// Resource usage inside the guest, from `/proc` and statvfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuestStats {
    /// Milliseconds since the guest kernel booted.
    pub uptime_ms: u64,
    /// Online CPUs.
    pub cpus: u32,
    /// Memory, from `/proc/meminfo`.
    pub memory: MemoryStats,
    /// CPU time summed over all CPUs since boot, from `/proc/stat`.
    pub cpu: CpuTimes,
    /// Usage of `/` and `/root` (the work disk).
    pub disks: Vec<DiskUsage>,
}

/// Guest memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryStats {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`.
    pub available_bytes: u64,
    /// `total - available`: what the guest uses, page cache excluded.
    pub used_bytes: u64,
}

/// Cumulative CPU time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpuTimes {
    /// User mode, niced included.
    pub user_ms: u64,
    /// Kernel mode, interrupts included.
    pub system_ms: u64,
    /// Idle, I/O wait included.
    pub idle_ms: u64,
    /// Stolen by the host.
    pub steal_ms: u64,
}

/// One filesystem's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskUsage {
    /// The mount point asked about.
    pub path: String,
    /// Size in bytes.
    pub total_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
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
