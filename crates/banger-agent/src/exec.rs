//! One exec session: spawn, pump its streams into frames, report the end.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banger_proto::flow::MAX_CHUNK;
use banger_proto::{ExecRequest, ExitStatus, Frame, FrameKind, Message, TtySize};

use crate::flow::Flow;
use crate::reaper::{Exit, Reaper};
use crate::spawn::{self, Spawned};
use crate::streams::{self, Input, Stream};
use crate::transport::Sink;
use crate::user::{self, Identity};

/// After the process exits, how long to wait for its output pipes to reach
/// EOF while nothing arrives on them. A background grandchild may hold them
/// open forever; we must not wait for it to report the exit. Time spent
/// waiting for the host's credit does not count: that output exists and is
/// delivered first.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

fn openpty(size: TtySize) -> io::Result<(File, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers are valid; name and termios may be null.
    let r = unsafe {
        libc::openpty(
            &raw mut master,
            &raw mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &raw const ws,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh fds that we now own.
    let (m, s) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [master, slave] {
        // SAFETY: fd is valid; setting FD_CLOEXEC so later execs do not
        // inherit another session's terminal.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

/// Sets the window size of a pty master.
pub fn resize(master: &File, size: TtySize) {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is a valid pty master and `ws` a valid winsize.
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(master),
            libc::TIOCSWINSZ,
            &raw const ws,
        )
    };
}

fn build_command(req: &ExecRequest, who: Option<&Identity>) -> Command {
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..]);
    cmd.env_clear();
    cmd.env("PATH", crate::spawn::DEFAULT_PATH)
        .env("HOME", who.map_or("/root", |w| w.home.as_str()));
    if let Some(name) = who.and_then(|w| w.name.as_deref()) {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    if req.tty.is_some() {
        cmd.env("TERM", "xterm-256color");
    }
    for (k, v) in &req.env {
        cmd.env(k, v);
    }
    cmd
}

/// Where the process starts, and whether the request named it. A named
/// directory must be enterable (else the spawn fails naming it); the
/// default is the user's home (`/root` for the default root) when it is a
/// directory, else `/`.
fn start_dir(req: &ExecRequest, who: Option<&Identity>) -> Result<(CString, bool), String> {
    let (dir, explicit) = match &req.cwd {
        Some(cwd) => (cwd.as_str(), true),
        None => {
            let home = who.map_or("/root", |w| w.home.as_str());
            (if Path::new(home).is_dir() { home } else { "/" }, false)
        }
    };
    let dir = CString::new(dir).map_err(|_| format!("working directory {dir:?} contains NUL"))?;
    Ok((dir, explicit))
}

/// Why an exec ended before its process ran.
enum Failure {
    /// The request could not be carried out.
    Refused(String),
    /// The program is missing (127) or cannot be executed (126), as a
    /// shell would report it.
    NotStarted { message: String, exit_code: i32 },
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Refused(message)
    }
}

/// Runs one exec to completion. Called on its own thread; the stream is
/// registered in the table already. `not_started`: the host understands
/// `not_started` (else such a failure is an `error`).
pub fn run(st: Stream, req: ExecRequest, reaper: Reaper, not_started: bool) {
    let (id, sink, table) = (st.id, st.sink.clone(), st.table.clone());
    let Err(failure) = run_inner(st, req, &reaper) else {
        return;
    };
    streams::forget(&table, id);
    let message = match failure {
        Failure::NotStarted { message, exit_code } if not_started => {
            Message::NotStarted { message, exit_code }
        }
        Failure::NotStarted { message, .. } | Failure::Refused(message) => {
            Message::Error { message }
        }
    };
    let _ = sink.send(&Frame::control(id, message));
}

/// The failure of a spawn: a missing or unrunnable program is the shell's
/// 127 or 126 (the working directory was checked before, so ENOENT is about
/// the program or its interpreter); anything else is refused with `what`.
fn spawn_failure(program: &str, what: String, e: &io::Error) -> Failure {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Failure::NotStarted {
            message: if program.contains('/') {
                format!("{program}: no such file or directory")
            } else {
                format!("{program}: executable file not found in PATH")
            },
            exit_code: 127,
        },
        Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR) => Failure::NotStarted {
            message: format!("{program}: cannot execute: {e}"),
            exit_code: 126,
        },
        _ => Failure::Refused(format!("{what}: {e}")),
    }
}

fn run_inner(st: Stream, req: ExecRequest, reaper: &Reaper) -> Result<(), Failure> {
    let Stream {
        id,
        sink,
        table,
        flow,
        input,
    } = st;
    let sink = &sink;
    if req.argv.is_empty() {
        return Err(Failure::Refused("empty argv".into()));
    }
    // Absent or empty: root with the agent's own groups, as before users
    // existed in the protocol.
    let who = match req.user.as_deref().filter(|u| !u.is_empty()) {
        Some(spec) => Some(user::lookup(spec).map_err(|e| Failure::Refused(e.to_string()))?),
        None => None,
    };
    let mut cmd = build_command(&req, who.as_ref());
    let (dir, explicit_dir) = start_dir(&req, who.as_ref())?;
    let tty = req.tty;
    if let Some(cwd) = req.cwd.as_deref().filter(|_| explicit_dir)
        && !Path::new(cwd).is_dir()
    {
        return Err(Failure::Refused(format!(
            "working directory {cwd}: no such directory"
        )));
    }
    let describe = |e: io::Error| {
        let mut what = format!("spawn {}", req.argv[0]);
        if let (Some(_), Some(spec)) = (&who, &req.user) {
            what.push_str(&format!(" as {spec}"));
        }
        if let Some(cwd) = &req.cwd {
            what.push_str(&format!(" in {cwd}"));
        }
        spawn_failure(&req.argv[0], what, &e)
    };
    let (mut child, exit, pty) = if who.is_none() && tty.is_none() {
        // The common exec: no fork (see `spawn`). The agent's root can
        // enter any directory that exists, so the default home needs no
        // fallback to / here.
        let (child, rx) = reaper
            .spawn(|| spawn::spawn(&cmd, &dir, req.stdin).map(|s| (s.pid, s)))
            .map_err(describe)?;
        (child, rx, None)
    } else {
        let pty = forked_stdio(&mut cmd, &req, who.as_ref())?;
        let with_tty = pty.is_some();
        let creds = who.as_ref().map(|w| (w.uid, w.gid, w.groups.clone()));
        // SAFETY: the closure only calls async-signal-safe functions
        // (setsid, ioctl, setgroups, setgid, setuid, chdir) between fork
        // and exec, on data prepared before the fork; it does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                // Own session: signals and job control of this exec do not
                // touch the agent, and a tty exec can take a controlling tty.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Groups, then gid, then uid: once the uid is not 0 the
                // others can no longer change.
                if let Some((uid, gid, groups)) = &creds
                    && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                        || libc::setgid(*gid) < 0
                        || libc::setuid(*uid) < 0)
                {
                    return Err(io::Error::last_os_error());
                }
                // After the switch, so that the user cannot start in a
                // directory they could not enter themselves. A default
                // home that they cannot enter falls back to /.
                if libc::chdir(dir.as_ptr()) < 0 && (explicit_dir || libc::chdir(c"/".as_ptr()) < 0)
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (child, rx) = reaper
            .spawn(|| {
                let mut c = cmd.spawn()?;
                let file = |fd: Option<OwnedFd>| fd.map(File::from);
                let pid = c.id() as i32;
                let s = Spawned {
                    pid,
                    stdin: file(c.stdin.take().map(OwnedFd::from)),
                    stdout: file(c.stdout.take().map(OwnedFd::from)),
                    stderr: file(c.stderr.take().map(OwnedFd::from)),
                };
                Ok((pid, s))
            })
            .map_err(describe)?;
        (child, rx, pty)
    };
    // Drop the parent's copies of the pty slave now, or the master never
    // sees EOF/EIO after the child exits.
    drop(cmd);
    let pid = child.pid;

    // Steerable from now on; an abort that came first kills it at once.
    {
        let mut t = streams::lock(&table);
        match t.get_mut(&id) {
            Some(ctl) => {
                ctl.pid = Some(pid);
                ctl.pty = pty.clone();
            }
            None => {
                let _ = crate::sys::kill(-pid, libc::SIGKILL);
            }
        }
    }

    let stdin_to = |dst: Box<dyn Write + Send>, tty: bool| {
        let (sink, flow) = (sink.clone(), flow.clone());
        std::thread::spawn(move || pump_stdin(input, dst, tty, id, &sink, &flow));
    };
    // The output is read by this thread (no thread per stream: each costs
    // about a millisecond in a TCG guest).
    let mut outputs: Vec<Output> = Vec::new();
    match &pty {
        Some(master) => {
            outputs.push(Output {
                fd: master.as_raw_fd(),
                src: Box::new(ArcFile(master.clone())),
                kind: FrameKind::Stdout,
            });
            stdin_to(Box::new(ArcFile(master.clone())), true);
        }
        None => {
            for (f, kind) in [
                (child.stdout.take(), FrameKind::Stdout),
                (child.stderr.take(), FrameKind::Stderr),
            ] {
                if let Some(f) = f {
                    outputs.push(Output {
                        fd: f.as_raw_fd(),
                        src: Box::new(f),
                        kind,
                    });
                }
            }
            if let Some(stdin) = child.stdin.take() {
                stdin_to(Box::new(stdin), false);
            }
        }
    }
    let _ = sink.send(&Frame::control(id, Message::Started { pid: pid as u32 }));

    let status = pump_output(outputs, &exit, id, sink, &flow)?;
    // Output a grandchild still holds open is dropped unread: nothing is
    // sent after `exited`.
    streams::forget(&table, id);
    let _ = sink.send(&Frame::control(id, Message::Exited(status)));
    Ok(())
}

/// One of the process's output streams.
struct Output {
    fd: RawFd,
    src: Box<dyn Read + Send>,
    kind: FrameKind,
}

/// Sends the process's output as frames of stream `id` until it ends, and
/// returns the exit status. Never reads more than the host's window: while
/// it is spent nothing is read and the process blocks on its pipe, so
/// nothing accumulates here. After the exit, output still open is waited
/// for as long as it flows or waits for credit, and [`DRAIN_GRACE`] more
/// once it is idle (a background grandchild may hold a pipe forever).
fn pump_output(
    mut outputs: Vec<Output>,
    exit: &Exit,
    id: u32,
    sink: &Sink,
    flow: &Flow,
) -> Result<ExitStatus, String> {
    let lost = || "reaper lost the child".to_string();
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut status = None;
    let mut idle_since = Instant::now();
    while !outputs.is_empty() {
        let timeout_ms = if status.is_some() {
            let left = DRAIN_GRACE.saturating_sub(idle_since.elapsed());
            if left.is_zero() {
                break;
            }
            i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
        } else {
            -1
        };
        let mut fds: Vec<libc::pollfd> = outputs
            .iter()
            .map(|o| libc::pollfd {
                fd: o.fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if status.is_none() {
            fds.push(libc::pollfd {
                fd: exit.ended.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll the output: {e}"));
        }
        if status.is_none() && fds.last().is_some_and(|p| p.revents != 0) {
            status = Some(exit.status.recv().map_err(|_| lost())?);
            idle_since = Instant::now();
        }
        // Back to front, so that removing an ended stream keeps the
        // indices of those still to look at.
        for k in (0..outputs.len()).rev() {
            if fds[k].revents == 0 {
                continue;
            }
            let Some(room) = flow.reserve(buf.len()) else {
                // The stream is closed: the host is gone or aborted it.
                outputs.clear();
                break;
            };
            let read = loop {
                match outputs[k].src.read(&mut buf[..room]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            // Waiting for credit and reading both count as progress.
            idle_since = Instant::now();
            match read {
                // A read error is the stream's end (a pty master reports
                // EIO once the last slave closes).
                Ok(0) | Err(_) => {
                    flow.unreserve(room);
                    outputs.remove(k);
                }
                Ok(n) => {
                    flow.unreserve(room - n);
                    let frame = Frame::Data {
                        stream: id,
                        kind: outputs[k].kind,
                        data: buf[..n].to_vec(),
                    };
                    if sink.send(&frame).is_err() {
                        outputs.clear();
                        break;
                    }
                }
            }
        }
    }
    match status {
        Some(st) => Ok(st),
        None => exit.status.recv().map_err(|_| lost()),
    }
}

/// Stdio of a forked exec: the slave of a new terminal (returning its
/// master), or pipes.
fn forked_stdio(
    cmd: &mut Command,
    req: &ExecRequest,
    who: Option<&Identity>,
) -> Result<Option<Arc<File>>, String> {
    let Some(size) = req.tty else {
        cmd.stdin(if req.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        return Ok(None);
    };
    let (master, slave) = openpty(size).map_err(|e| format!("openpty: {e}"))?;
    // The child gets the slave as root before it drops privileges, but
    // programs that reopen their terminal by name (ttyname, then open)
    // need to own it, as login does. The group stays devpts' `tty`.
    if let Some(w) = who {
        std::os::unix::fs::fchown(&slave, Some(w.uid), None)
            .map_err(|e| format!("chown pty: {e}"))?;
    }
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup pty: {e}"));
    cmd.stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    Ok(Some(Arc::new(master)))
}

/// `Read`/`Write` through a shared pty master.
struct ArcFile(Arc<File>);

impl Read for ArcFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for ArcFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the host's stdin frames to the process, crediting the host as
/// they are written: a process that does not read its stdin stops the host
/// after one window instead of filling the agent's memory.
fn pump_stdin(
    rx: mpsc::Receiver<Input>,
    mut dst: Box<dyn Write + Send>,
    tty: bool,
    id: u32,
    sink: &Sink,
    flow: &Flow,
) {
    while let Ok(Some(data)) = rx.recv() {
        if dst.write_all(&data).is_err() {
            return;
        }
        flow.consumed(data.len(), id, sink);
    }
    // On a terminal there is no half-close: EOF is the VEOF character at
    // the start of a line, as a user pressing ^D.
    if tty {
        let _ = dst.write_all(&[4]);
    }
}
