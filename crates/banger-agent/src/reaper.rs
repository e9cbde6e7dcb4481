//! The one place that waits for children.
//!
//! As PID 1 the agent inherits every orphan in the guest and must reap
//! them, so it waits with `waitid(P_ALL)`; that would steal the exit status
//! of processes an exec session is waiting for, so all waiting goes through
//! here and statuses are routed to whoever registered the pid.
//!
//! Race-freedom: [`Reaper::spawn`] holds the table lock across spawn+register,
//! and the reaper thread first peeks with `WNOWAIT`, then takes the lock,
//! then reaps that pid. So a child can never be reaped before it is in the
//! table, and a child std reaps itself (failed exec inside `spawn`) is
//! simply gone by the time the reaper looks.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use banger_proto::ExitStatus;

/// Per registered pid: where its status goes, and the write end of the
/// pipe whose closing tells a poller that it went.
type Table = HashMap<i32, (mpsc::Sender<ExitStatus>, OwnedFd)>;

/// How a spawned process's end is learnt: its status on `status`; `ended`
/// (a pipe's read end) reports EOF once the status has been sent, so a
/// thread in `poll` on the process's output sees the exit too.
#[derive(Debug)]
pub struct Exit {
    pub status: mpsc::Receiver<ExitStatus>,
    pub ended: OwnedFd,
}

/// Handle to the reaper thread.
#[derive(Clone, Debug)]
pub struct Reaper {
    shared: Arc<(Mutex<Table>, Condvar)>,
}

impl Reaper {
    /// Starts the reaper thread.
    pub fn start() -> Reaper {
        let shared = Arc::new((Mutex::new(Table::new()), Condvar::new()));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap_loop(&s))
            .expect("spawn reaper thread");
        Reaper { shared }
    }

    /// Runs `start` (which creates a process and returns its pid with
    /// whatever handles it made) and returns those handles with how to
    /// learn of the process's end.
    pub fn spawn<T>(&self, start: impl FnOnce() -> io::Result<(i32, T)>) -> io::Result<(T, Exit)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid out-array of two ints. Close-on-exec:
        // no child may hold the write end, or the EOF would never come.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh fds that we now own.
        let (ended, notify) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (lock, cv) = &*self.shared;
        let mut table = lock.lock().unwrap_or_else(|p| p.into_inner());
        let (pid, handles) = start()?;
        let (tx, status) = mpsc::channel();
        table.insert(pid, (tx, notify));
        drop(table);
        cv.notify_all();
        Ok((handles, Exit { status, ended }))
    }
}

fn reap_loop(shared: &(Mutex<Table>, Condvar)) {
    let (lock, cv) = shared;
    loop {
        // SAFETY: siginfo_t is plain old data; zeroed is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer.
        let r =
            unsafe { libc::waitid(libc::P_ALL, 0, &raw mut info, libc::WEXITED | libc::WNOWAIT) };
        if r != 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
                // No children: sleep until a spawn, or a while, since an
                // orphan reparented to us also ends the ECHILD state. A
                // spawn between that answer and this lock has already
                // notified, so a registered child means look again now.
                let g = lock.lock().unwrap_or_else(|p| p.into_inner());
                if g.is_empty() {
                    let _ = cv.wait_timeout(g, Duration::from_secs(1));
                }
            }
            continue;
        }
        // SAFETY: waitid succeeded for WEXITED, so si_pid is set.
        let pid = unsafe { info.si_pid() };
        let mut table = lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if r != pid {
            continue;
        }
        let st = if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(status),
            }
        } else {
            ExitStatus::Code {
                code: libc::WEXITSTATUS(status),
            }
        };
        if let Some((tx, notify)) = table.remove(&pid) {
            let _ = tx.send(st);
            drop(notify);
        }
    }
}
