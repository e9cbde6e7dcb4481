//! Starting a VMM process: detached, confined, and with its output bounded.
//!
//! Both drivers start their VMM the same way: a child in its own session
//! (so it outlives the daemon and no terminal signal reaches it), with the
//! descriptors it must inherit (a tap, a saved state) and no other, its
//! stdout and stderr a pipe drained into the console log
//! ([`crate::console`]; the first bytes kept to explain a failed start),
//! and a thread that reaps it while this daemon lives (after a daemon
//! restart it is init's child).
//!
//! It is moved into its VM's cgroup ([`crate::cgroup`]) by the daemon
//! right after the fork, while it starts up, and the driver waits for that
//! move ([`Started::confined`]) before the guest may run: QEMU waits for
//! the daemon on its console socket before it builds the machine,
//! Firecracker is sent no request before. (Moving a process between
//! cgroups waits for an RCU grace period, ~10 ms; done in the child
//! before exec it would delay every start by that much.)
//!
//! QEMU is not asked to `-daemonize`: its fork would break its own
//! `-sandbox spawn=deny`, and a child of ours is as detached.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use crate::cgroup::VmCgroup;
use crate::console::{Capture, ConsoleLog};
use crate::{Result, VmmError, process};

/// What to start.
#[derive(Debug)]
pub(crate) struct ChildSpec<'a> {
    pub program: &'a str,
    pub args: Vec<String>,
    /// Descriptors the VMM inherits under their own numbers.
    pub keep_fds: Vec<RawFd>,
    /// The VM's cgroup, entered while it starts ([`Started::confined`]).
    pub cgroup: Option<&'a VmCgroup>,
    /// Where its stdout and stderr go.
    pub console: Arc<ConsoleLog>,
    /// Start it with transparent huge pages off (`PR_SET_THP_DISABLE`,
    /// kept across exec): every region it touches is then held by the
    /// 4 KiB page, not by the 2 MiB page a region asked for.
    pub small_pages: bool,
}

/// A started VMM, not yet reaped.
#[derive(Debug)]
pub(crate) struct Started {
    pub pid: i32,
    pub start_time: u64,
    child: Child,
    capture: Capture,
    output: tokio::task::JoinHandle<()>,
    confine: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Starts `spec` (see the module doc).
pub(crate) fn start(spec: ChildSpec<'_>) -> Result<Started> {
    let spawn_err = |source| VmmError::Spawn {
        binary: spec.program.to_string(),
        source,
    };
    let procs: Vec<OwnedFd> = match spec.cgroup {
        Some(g) => g.procs_files().map_err(VmmError::Cgroup)?,
        None => Vec::new(),
    };
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| spawn_err(e.into()))?;
    let write_err = write.try_clone().map_err(spawn_err)?;
    let keep = spec.keep_fds.clone();
    let small_pages = spec.small_pages;
    let mut cmd = Command::new(spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err));
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (setsid, prctl, fcntl) on descriptors
    // this function keeps open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if small_pages && libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in &keep {
                // Every descriptor of ours is close-on-exec; these must
                // reach the VMM under the numbers its arguments name.
                if libc::fcntl(*fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    drop(cmd);
    let pid =
        i32::try_from(child.id()).map_err(|_| VmmError::InvalidSpec("pid overflow".into()))?;
    // Not reaped yet, so its /proc entry is there even if it exited.
    let start_time = process::start_time(pid).map_err(|source| VmmError::Io {
        op: "stat",
        path: format!("/proc/{pid}/stat"),
        source,
    })?;
    // Into its cgroup, on a thread, while it starts.
    let confine = (!procs.is_empty())
        .then(|| tokio::task::spawn_blocking(move || crate::cgroup::enter_pid(&procs, pid)));
    let capture = Capture::default();
    let output = match nonblocking_reader(read) {
        Ok(r) => crate::console::drain(r, spec.console, Some(capture.clone())),
        Err(_) => tokio::spawn(async {}),
    };
    Ok(Started {
        pid,
        start_time,
        child,
        capture,
        output,
        confine,
    })
}

fn nonblocking_reader(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

impl Started {
    /// Waits until it sits in its cgroup (if it has one); the guest must
    /// not run before.
    pub async fn confined(&mut self) -> Result<()> {
        let Some(task) = self.confine.take() else {
            return Ok(());
        };
        task.await
            .map_err(|e| VmmError::InvalidSpec(format!("cgroup move: {e}")))?
            .map_err(|source| VmmError::Io {
                op: "move into its cgroup",
                path: format!("pid {}", self.pid),
                source,
            })
    }

    /// Whether it has exited (start-up failed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What it printed before it exited: waits for the pipe's end, so the
    /// whole message is there.
    pub async fn output(&mut self) -> String {
        let _ = (&mut self.output).await;
        let c = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&c);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            "(no output)".into()
        } else {
            lines.join("; ")
        }
    }

    /// Kills it (a failed start) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reaps it on a thread when it ends, while this daemon lives.
    pub fn reap_in_background(self) {
        let mut child = self.child;
        std::thread::spawn(move || child.wait());
    }
}
