//! The ssh transport: a daemon on another machine, reached with the user's
//! own OpenSSH client (their keys, agent, `~/.ssh/config`, ProxyJump and
//! known_hosts). Each connection is one `ssh HOST banger system
//! dial-stdio`, whose stdin and stdout carry the HTTP bytes; the remote
//! end splices them to that user's daemon socket. Connections share one
//! ssh connection (`ControlMaster`), so only the first command pays the
//! handshake. No port is opened anywhere: sshd is the only way in.
//!
//! ssh's own failures (a wrong host, refused auth, a changed host key, no
//! banger on the remote) end the child before the daemon answers; the
//! connection then reads as an [`SshFailure`] that says, in one line,
//! what went wrong and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::{Context as TaskContext, Poll, ready};

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;

/// The environment variable that replaces `ssh` (words split as a shell
/// would, like git's `GIT_SSH_COMMAND`): e.g. `ssh -F ~/.ssh/lab_config`.
pub const SSH_COMMAND_VAR: &str = "BANGER_SSH_COMMAND";

/// How long an idle shared connection outlives the last command.
const CONTROL_PERSIST: &str = "60";

/// `ssh://[user@]host[:port]`: where the remote daemon's user logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl SshTarget {
    /// Parse `ssh://[user@]host[:port]`; nothing else may follow the host.
    pub fn parse(s: &str) -> Result<SshTarget> {
        let url = url::Url::parse(s)
            .map_err(|e| anyhow!("invalid host {s:?}: {e} (expected ssh://[user@]host[:port])"))?;
        if url.scheme() != "ssh" {
            bail!(
                "unsupported host {s:?}: only ssh://[user@]host[:port] is supported ({}:// is not)",
                url.scheme()
            );
        }
        if url.password().is_some() {
            bail!("invalid host {s:?}: no password in the URL; ssh uses your keys and agent");
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            bail!("invalid host {s:?}: nothing may follow host[:port]");
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| anyhow!("invalid host {s:?}: no host name"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.starts_with('-') {
            bail!("invalid host {s:?}: a host name cannot start with '-'");
        }
        let user = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(|u| {
                percent_encoding::percent_decode_str(u)
                    .decode_utf8()
                    .map(|u| u.into_owned())
                    .map_err(|_| anyhow!("invalid host {s:?}: bad user name"))
            })
            .transpose()?;
        if user.as_deref().is_some_and(|u| u.starts_with('-')) {
            bail!("invalid host {s:?}: a user name cannot start with '-'");
        }
        Ok(SshTarget {
            user,
            host,
            port: url.port(),
        })
    }

    /// The URL again, in its canonical spelling.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("ssh://{user}{host}{port}")
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url().trim_start_matches("ssh://"))
    }
}

/// The ssh program and its leading words: `BANGER_SSH_COMMAND` or `ssh`.
pub fn ssh_program() -> Result<Vec<String>> {
    match std::env::var(SSH_COMMAND_VAR) {
        Ok(s) if !s.trim().is_empty() => shlex::split(&s)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| anyhow!("{SSH_COMMAND_VAR}={s:?} is not a valid command line")),
        _ => Ok(vec!["ssh".into()]),
    }
}

/// An `ssh` command to `target` sharing one connection per host through
/// the control sockets under `control_dir`, ready for the remote words.
/// Batch mode: the connection's stdio is the protocol, and ssh runs in a
/// process group of its own (so Ctrl-C reaches the guest, not ssh), so it
/// can prompt for nothing; keys come from files or the agent.
pub fn command(target: &SshTarget, control_dir: &Path) -> Result<std::process::Command> {
    let words = ssh_program()?;
    let mut cmd = std::process::Command::new(&words[0]);
    cmd.args(&words[1..]);
    let control = control_dir.join("%C");
    cmd.args(["-o", "ControlMaster=auto"])
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args(["-o", &format!("ControlPersist={CONTROL_PERSIST}")])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=15"])
        .args(["-o", "ServerAliveInterval=10"])
        .args(["-o", "ServerAliveCountMax=3"])
        .arg("-T");
    if let Some(user) = &target.user {
        cmd.arg("-l").arg(user);
    }
    if let Some(port) = target.port {
        cmd.arg("-p").arg(port.to_string());
    }
    cmd.arg("--").arg(&target.host);
    Ok(cmd)
}

/// Make the directory of the control sockets, private to this user.
pub fn ensure_control_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        bail!(
            "{} must be a directory of yours that only you can use (ssh control sockets live there)",
            dir.display()
        );
    }
    Ok(())
}

/// Why an ssh child ended: its status and what it said on stderr.
#[derive(Debug)]
struct Outcome {
    status: Option<ExitStatus>,
    stderr: String,
}

/// One connection to the remote daemon over an ssh child's stdio.
#[derive(Debug)]
pub struct SshConn {
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    target: SshTarget,
    outcome: Option<oneshot::Receiver<Outcome>>,
    failure: Option<SshFailure>,
    /// Dropped with the connection: the reaper then lets ssh go.
    _closed: oneshot::Sender<()>,
}

/// Open one connection: `ssh ... HOST banger system dial-stdio [--no-start]`.
pub fn connect(target: &SshTarget, control_dir: &Path, start: bool) -> Result<SshConn> {
    ensure_control_dir(control_dir)?;
    let mut std_cmd = command(target, control_dir)?;
    std_cmd.args(["banger", "system", "dial-stdio"]);
    if !start {
        std_cmd.arg("--no-start");
    }
    // Ctrl-C in the terminal is for the guest (or for this CLI, which
    // forwards it): ssh must not die of it.
    std::os::unix::process::CommandExt::process_group(&mut std_cmd, 0);
    let mut cmd = Command::from(std_cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let program = ssh_program()
            .ok()
            .and_then(|w| w.into_iter().next())
            .unwrap_or_else(|| "ssh".into());
        if e.kind() == io::ErrorKind::NotFound {
            anyhow!("cannot run {program}: not found (install openssh-client)")
        } else {
            anyhow!("cannot run {program}: {e}")
        }
    })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (done_tx, done_rx) = oneshot::channel();
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut text = Vec::new();
        let read_err = async {
            // Bounded: ssh says little, a broken remote might say a lot.
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text).await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        };
        let status = tokio::select! {
            (status, ()) = async { tokio::join!(child.wait(), read_err) } => status.ok(),
            _ = &mut closed_rx => {
                // The connection is done with: its stdin is closed, so ssh
                // ends by itself once the remote side has; give it a moment.
                match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await.ok()
                    }
                }
            }
        };
        let _ = done_tx.send(Outcome {
            status,
            stderr: String::from_utf8_lossy(&text).into_owned(),
        });
    });
    Ok(SshConn {
        stdin: Some(stdin),
        stdout,
        target: target.clone(),
        outcome: Some(done_rx),
        failure: None,
        _closed: closed_tx,
    })
}

impl SshConn {
    /// Once ssh has ended: `Some` when it failed, with why.
    fn poll_failure(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<SshFailure>> {
        if let Some(f) = &self.failure {
            return Poll::Ready(Some(f.clone()));
        }
        let Some(rx) = self.outcome.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(rx).poll(cx));
        self.outcome = None;
        let failure = match outcome {
            Ok(o) if !o.status.is_some_and(|s| s.success()) => Some(SshFailure::new(
                &self.target,
                o.status.and_then(|s| s.code()),
                &o.stderr,
            )),
            _ => None,
        };
        self.failure.clone_from(&failure);
        Poll::Ready(failure)
    }
}

use std::future::Future as _;

impl AsyncRead for SshConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match ready!(Pin::new(&mut this.stdout).poll_read(cx, buf)) {
            Ok(()) if buf.filled().len() == before && buf.remaining() > 0 => {
                // End of stream: a clean end, or ssh failing?
                match ready!(this.poll_failure(cx)) {
                    Some(f) => Poll::Ready(Err(io::Error::other(f))),
                    None => Poll::Ready(Ok(())),
                }
            }
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => match ready!(this.poll_failure(cx)) {
                Some(f) => Poll::Ready(Err(io::Error::other(f))),
                None => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for SshConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(stdin) = this.stdin.as_mut() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        };
        match ready!(Pin::new(stdin).poll_write(cx, buf)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => match ready!(this.poll_failure(cx)) {
                Some(f) => Poll::Ready(Err(io::Error::other(f))),
                None => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().stdin.as_mut() {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(stdin) = this.stdin.as_mut() {
            ready!(Pin::new(stdin).poll_flush(cx))?;
        }
        // Closing ssh's stdin half-closes the remote end.
        this.stdin = None;
        Poll::Ready(Ok(()))
    }
}

/// ssh (or the remote banger it ran) failed: one line saying what and
/// what to do about it.
#[derive(Debug, Clone)]
pub struct SshFailure {
    message: String,
    not_running: bool,
}

impl fmt::Display for SshFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SshFailure {}

impl SshFailure {
    fn new(target: &SshTarget, code: Option<i32>, stderr: &str) -> SshFailure {
        SshFailure {
            message: explain(target, code, stderr),
            not_running: code == Some(NOT_RUNNING) && stderr.contains(NOT_RUNNING_TEXT),
        }
    }

    /// The remote end found no daemon and was told not to start one.
    pub fn not_running(&self) -> bool {
        self.not_running
    }

    /// The failure inside an error chain, if ssh is why it failed.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a SshFailure> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(f) = err.downcast_ref::<SshFailure>() {
                return Some(f);
            }
            if let Some(io) = err.downcast_ref::<io::Error>()
                && let Some(f) = io.get_ref().and_then(|i| i.downcast_ref::<SshFailure>())
            {
                return Some(f);
            }
            cur = err.source();
        }
        None
    }
}

/// Exit code and message of `dial-stdio --no-start` when no daemon runs
/// (the exit code `daemon status` gives for the same).
pub const NOT_RUNNING: i32 = 3;
pub const NOT_RUNNING_TEXT: &str = "bangerd is not running";

/// Turn how ssh ended into one line.
pub fn explain(target: &SshTarget, code: Option<i32>, stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .filter(|l| !l.chars().all(|c| c == '@'))
        .collect();
    let last = lines.last().copied().unwrap_or("");
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
    {
        let why = if stderr.contains("HAS CHANGED") {
            "the host key differs from the one in your known_hosts"
        } else {
            "its host key is not in your known_hosts"
        };
        return format!(
            "ssh to {target} refused: {why} (Host key verification failed); check the host's key and fix known_hosts (ssh-keygen -R {}) before trying again",
            target.host
        );
    }
    if code == Some(127)
        || stderr.contains("banger: not found")
        || stderr.contains("banger: command not found")
    {
        return format!(
            "no banger on {target}: install banger there (banger, bangerd, banger-rootfs and banger-agent in one directory) where a non-interactive ssh session finds it (see `ssh {} 'echo $PATH'`)",
            target.host
        );
    }
    if stderr.contains("unrecognized subcommand 'dial-stdio'") {
        return format!(
            "the banger on {target} is too old to be driven over ssh (it has no `system dial-stdio`); install banger {} there",
            env!("CARGO_PKG_VERSION")
        );
    }
    if code == Some(NOT_RUNNING) && last.contains(NOT_RUNNING_TEXT) {
        return format!("bangerd is not running on {target}");
    }
    let cut = [
        "mux_client",
        "Broken pipe",
        "Connection reset",
        "client_loop",
        "Timeout, server",
    ];
    if code == Some(255) && (last.is_empty() || cut.iter().any(|c| last.contains(c))) {
        let why = if last.is_empty() {
            String::new()
        } else {
            format!(" ({})", last.trim_end_matches('.'))
        };
        return format!("the ssh connection to {target} was cut{why}");
    }
    if code == Some(255) || !lines.iter().any(|l| l.starts_with("banger: ")) {
        let said = if last.is_empty() {
            format!(
                "ssh exited with code {}",
                code.map_or("?".into(), |c| c.to_string())
            )
        } else {
            last.trim_end_matches('.').to_string()
        };
        return format!("ssh to {target} failed: {said}");
    }
    let remote = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("banger: "))
        .unwrap_or(last);
    format!("on {target}: {remote}")
}

/// Where the control sockets of this user's shared ssh connections live:
/// `$XDG_RUNTIME_DIR/banger-ssh`, else `/tmp/banger-ssh-<uid>` (checked to
/// be this user's alone before use). Short on purpose: ssh adds 57 bytes
/// (`%C` and a temporary suffix) and a socket path has 104.
pub fn control_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
    {
        Some(xdg) => xdg.join("banger-ssh"),
        None => PathBuf::from(format!(
            "/tmp/banger-ssh-{}",
            nix::unistd::geteuid().as_raw()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = SshTarget::parse("ssh://box").unwrap();
        assert_eq!(
            t,
            SshTarget {
                user: None,
                host: "box".into(),
                port: None
            }
        );
        let t = SshTarget::parse("ssh://me@10.0.0.2:2222").unwrap();
        assert_eq!(t.user.as_deref(), Some("me"));
        assert_eq!(t.host, "10.0.0.2");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.url(), "ssh://me@10.0.0.2:2222");
        assert_eq!(t.to_string(), "me@10.0.0.2:2222");
        let t = SshTarget::parse("ssh://[::1]:22/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.url(), "ssh://[::1]:22");
        for bad in [
            "box",
            "tcp://box:2375",
            "ssh://",
            "ssh://box/path",
            "ssh://me:pw@box",
            "ssh://box?x=1",
            "ssh://-oProxyCommand=x",
            "ssh://-x@box",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_read_as_one_line() {
        let t = SshTarget::parse("ssh://me@box").unwrap();
        let e = explain(&t, Some(255), "me@box: Permission denied (publickey).\r\n");
        assert_eq!(
            e,
            "ssh to me@box failed: me@box: Permission denied (publickey)"
        );
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
            Host key verification failed.\n";
        let e = explain(&t, Some(255), changed);
        assert!(e.contains("host key differs"), "{e}");
        assert!(!e.contains('\n'));
        let e = explain(&t, Some(127), "sh: 1: banger: not found\n");
        assert!(e.starts_with("no banger on me@box"), "{e}");
        let e = explain(
            &t,
            Some(2),
            "banger: unrecognized subcommand 'dial-stdio' (see --help)\n",
        );
        assert!(e.contains("too old"), "{e}");
        let e = explain(&t, Some(255), "");
        assert_eq!(e, "the ssh connection to me@box was cut");
        let e = explain(&t, Some(255), "Timeout, server box not responding.\n");
        assert_eq!(
            e,
            "the ssh connection to me@box was cut (Timeout, server box not responding)"
        );
        let e = explain(&t, Some(1), "banger: cannot create /x: denied\n");
        assert_eq!(e, "on me@box: cannot create /x: denied");
        let e = explain(
            &t,
            Some(255),
            "ssh: connect to host box port 22: Connection refused\r\n",
        );
        assert_eq!(
            e,
            "ssh to me@box failed: ssh: connect to host box port 22: Connection refused"
        );
    }
}
