//! How the CLI reaches its daemon: the one place a connection is opened.
//! Every request, stream and upgrade of [`super::Client`] starts with
//! [`Transport::open`]; starting a daemon that is not there is
//! [`Transport::start_daemon`]. The daemon is this user's on this host
//! ([`Transport::Local`]) or on another host over ssh ([`Transport::Ssh`],
//! `super::ssh`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use super::ssh::SshTarget;

/// A byte stream to the daemon, whatever carries it.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Where the daemon is and how to start it.
#[derive(Debug, Clone)]
pub enum Transport {
    /// This user's daemon on this host: its socket, its log (where a
    /// daemon this CLI starts writes) and the data dir it must serve.
    Local {
        socket: PathBuf,
        log: PathBuf,
        data_dir: PathBuf,
    },
    /// The login user's daemon on another host, one `ssh ... banger system
    /// dial-stdio` per connection, sharing one ssh connection through the
    /// control sockets in `control_dir`. With `start`, the remote end
    /// starts its daemon when none runs, as a local CLI does.
    Ssh {
        target: SshTarget,
        control_dir: PathBuf,
        start: bool,
    },
}

impl Transport {
    /// A new connection to the daemon.
    pub async fn open(&self) -> Result<Box<dyn Conn>> {
        match self {
            Transport::Local { socket, .. } => {
                let conn = UnixStream::connect(socket)
                    .await
                    .with_context(|| format!("connect to {}", socket.display()))?;
                Ok(Box::new(conn))
            }
            Transport::Ssh {
                target,
                control_dir,
                start,
            } => Ok(Box::new(super::ssh::connect(target, control_dir, *start)?)),
        }
    }

    /// What the user reads as "where": the socket, or `ssh://user@host`.
    pub fn describe(&self) -> String {
        match self {
            Transport::Local { socket, .. } => socket.display().to_string(),
            Transport::Ssh { target, .. } => target.url(),
        }
    }

    /// The remote host, when the daemon is not on this one.
    pub fn remote(&self) -> Option<&SshTarget> {
        match self {
            Transport::Local { .. } => None,
            Transport::Ssh { target, .. } => Some(target),
        }
    }

    /// Whether a connection is worth keeping for the next request: each
    /// new one over ssh is a new session (a process on both ends).
    pub fn reuses_connections(&self) -> bool {
        matches!(self, Transport::Ssh { .. })
    }

    /// The same daemon, never started by this transport's connections.
    pub fn without_start(self) -> Transport {
        match self {
            Transport::Ssh {
                target,
                control_dir,
                ..
            } => Transport::Ssh {
                target,
                control_dir,
                start: false,
            },
            local => local,
        }
    }

    /// The data dir the daemon must serve, when this CLI knows it.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Transport::Local { data_dir, .. } => Some(data_dir),
            Transport::Ssh { .. } => None,
        }
    }

    /// Start the daemon in the background; the caller polls until it
    /// answers. `Ok(None)` when nothing was started. The child is returned
    /// so the caller can tell an early exit from a slow start.
    pub fn start_daemon(&self) -> Result<Option<std::process::Child>> {
        match self {
            Transport::Local { log, .. } => spawn_local_daemon(log).map(Some),
            // The remote end of each connection starts it.
            Transport::Ssh { .. } => Ok(None),
        }
    }

    /// The last line the daemon logged, to say why it exited.
    pub fn last_log_line(&self) -> String {
        match self {
            Transport::Local { log, .. } => {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                tail.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output")
                    .to_string()
            }
            Transport::Ssh { target, .. } => {
                format!("see ~/.local/share/banger/bangerd.log on {target}")
            }
        }
    }

    /// Where to look when the daemon does not answer.
    pub fn log_hint(&self) -> String {
        match self {
            Transport::Local { log, .. } => format!("see {}", log.display()),
            Transport::Ssh { target, .. } => format!("see the daemon's log on {target}"),
        }
    }
}

/// Where `bangerd` is: beside this executable (cargo and installs put it
/// there), else in `PATH`.
fn daemon_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

fn spawn_local_daemon(log: &Path) -> Result<std::process::Child> {
    let exe = daemon_exe();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let log_err = log_file.try_clone()?;
    // Its own process group, so a Ctrl-C aimed at this CLI does not reach
    // the daemon; stdio detached so it outlives the terminal.
    let mut child = std::process::Command::new(&exe);
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    child
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// Wait for a daemon this CLI just started to answer `ping`, up to 15 s.
pub async fn wait_started<T, F, Fut>(
    transport: &Transport,
    mut child: Option<std::process::Child>,
    mut ping: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(info) = ping().await {
            // Reap it later: the daemon keeps running after we exit.
            if let Some(child) = child.take() {
                std::mem::forget(child);
            }
            return Ok(info);
        }
        if let Some(status) = child.as_mut().map(|c| c.try_wait()).transpose()?.flatten() {
            bail!(
                "bangerd exited ({status}) before answering: {}",
                transport.last_log_line()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "bangerd did not answer on {} within 15s; {}",
                transport.describe(),
                transport.log_hint()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
