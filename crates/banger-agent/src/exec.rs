//! One exec session: spawn, pump its streams into frames, report the end.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_proto::{ExecRequest, Frame, FrameKind, Message, TtySize};

use crate::reaper::Reaper;
use crate::transport::Sink;
use crate::user::{self, Identity};

/// Input for an exec's stdin pump: bytes, or `None` to close.
pub type StdinMsg = Option<Vec<u8>>;

/// What the session needs to steer a running exec.
#[derive(Debug)]
pub struct ExecCtl {
    pub pid: i32,
    pub stdin: Option<mpsc::Sender<StdinMsg>>,
    pub pty: Option<Arc<File>>,
}

/// The running execs of one session, by stream id.
pub type ExecTable = Arc<Mutex<HashMap<u32, ExecCtl>>>;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// After the process exits, how long to wait for its output pipes to reach
/// EOF. A background grandchild may hold them open forever; we must not
/// wait for it to report the exit.
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
    cmd.env("PATH", DEFAULT_PATH)
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

/// Runs one exec to completion. Called on its own thread.
pub fn run(id: u32, req: ExecRequest, sink: Arc<Sink>, reaper: Reaper, table: ExecTable) {
    if let Err(message) = run_inner(id, req, &sink, &reaper, &table) {
        table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let _ = sink.send(&Frame::control(id, Message::Error { message }));
    }
}

fn run_inner(
    id: u32,
    req: ExecRequest,
    sink: &Arc<Sink>,
    reaper: &Reaper,
    table: &ExecTable,
) -> Result<(), String> {
    if req.argv.is_empty() {
        return Err("empty argv".into());
    }
    // Absent or empty: root with the agent's own groups, as before users
    // existed in the protocol.
    let who = match req.user.as_deref().filter(|u| !u.is_empty()) {
        Some(spec) => Some(user::lookup(spec).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut cmd = build_command(&req, who.as_ref());
    let (dir, explicit_dir) = start_dir(&req, who.as_ref())?;
    let tty = req.tty;
    let pty = match tty {
        Some(size) => {
            let (master, slave) = openpty(size).map_err(|e| format!("openpty: {e}"))?;
            // The child gets the slave as root before it drops privileges,
            // but programs that reopen their terminal by name (ttyname,
            // then open) need to own it, as login does. The group stays
            // devpts' `tty`.
            if let Some(w) = &who {
                std::os::unix::fs::fchown(&slave, Some(w.uid), None)
                    .map_err(|e| format!("chown pty: {e}"))?;
            }
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup pty: {e}"));
            cmd.stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            Some(Arc::new(master))
        }
        None => {
            cmd.stdin(if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            None
        }
    };
    let with_tty = pty.is_some();
    let creds = who.as_ref().map(|w| (w.uid, w.gid, w.groups.clone()));
    // SAFETY: the closure only calls async-signal-safe functions (setsid,
    // ioctl, setgroups, setgid, setuid, chdir) between fork and exec, on
    // data prepared before the fork; it does not allocate.
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
            // Groups, then gid, then uid: once the uid is not 0 the others
            // can no longer change.
            if let Some((uid, gid, groups)) = &creds
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(*gid) < 0
                    || libc::setuid(*uid) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            // After the switch, so that the user cannot start in a
            // directory they could not enter themselves. A default home
            // that they cannot enter falls back to /.
            if libc::chdir(dir.as_ptr()) < 0 && (explicit_dir || libc::chdir(c"/".as_ptr()) < 0) {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (mut child, exit_rx) = reaper.spawn(&mut cmd).map_err(|e| {
        let mut what = format!("spawn {}", req.argv[0]);
        if let (Some(_), Some(spec)) = (&who, &req.user) {
            what.push_str(&format!(" as {spec}"));
        }
        if let Some(cwd) = &req.cwd {
            what.push_str(&format!(" in {cwd}"));
        }
        format!("{what}: {e}")
    })?;
    // Drop the parent's copies of the pty slave now, or the master never
    // sees EOF/EIO after the child exits.
    drop(cmd);
    let pid = child.id() as i32;

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut pumps = 0;
    let mut pump = |src: Box<dyn Read + Send>, kind: FrameKind| {
        let sink = sink.clone();
        let done = done_tx.clone();
        pumps += 1;
        std::thread::spawn(move || {
            pump_output(src, kind, id, &sink);
            let _ = done.send(());
        });
    };
    let stdin_tx = match &pty {
        Some(master) => {
            pump(Box::new(ArcFile(master.clone())), FrameKind::Stdout);
            let (tx, rx) = mpsc::channel::<StdinMsg>();
            let m = master.clone();
            std::thread::spawn(move || pump_stdin(rx, ArcFile(m), true));
            Some(tx)
        }
        None => {
            if let Some(out) = child.stdout.take() {
                pump(Box::new(out), FrameKind::Stdout);
            }
            if let Some(err) = child.stderr.take() {
                pump(Box::new(err), FrameKind::Stderr);
            }
            child.stdin.take().map(|stdin| {
                let (tx, rx) = mpsc::channel::<StdinMsg>();
                std::thread::spawn(move || pump_stdin(rx, stdin, false));
                tx
            })
        }
    };
    drop(done_tx);
    table.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        ExecCtl {
            pid,
            stdin: stdin_tx,
            pty: pty.clone(),
        },
    );
    let _ = sink.send(&Frame::control(id, Message::Started { pid: pid as u32 }));

    let status = exit_rx
        .recv()
        .map_err(|_| "reaper lost the child".to_string())?;
    let deadline = std::time::Instant::now() + DRAIN_GRACE;
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    table.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    let _ = sink.send(&Frame::control(id, Message::Exited(status)));
    Ok(())
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

fn pump_output(mut src: Box<dyn Read + Send>, kind: FrameKind, id: u32, sink: &Sink) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let frame = Frame::Data {
                    stream: id,
                    kind,
                    data: buf[..n].to_vec(),
                };
                if sink.send(&frame).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A pty master reports EIO once the last slave fd is closed:
            // that is its EOF.
            Err(_) => break,
        }
    }
}

fn pump_stdin(rx: mpsc::Receiver<StdinMsg>, mut dst: impl Write, tty: bool) {
    while let Ok(Some(data)) = rx.recv() {
        if dst.write_all(&data).is_err() {
            return;
        }
    }
    // On a terminal there is no half-close: EOF is the VEOF character at
    // the start of a line, as a user pressing ^D.
    if tty {
        let _ = dst.write_all(&[4]);
    }
}
