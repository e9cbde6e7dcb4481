//! Starting an exec's process without `fork`.
//!
//! std's `Command` forks whenever a `pre_exec` hook is set (the agent needs
//! one for `setsid`, user switches and a controlling terminal). A fork
//! copies the agent's page tables and marks every private page
//! copy-on-write, so the agent then takes a fault on each page it writes
//! while (and after) the child starts. Under QEMU TCG, where every fault
//! is emulated, that was several milliseconds of a `vm exec -- true`.
//! glibc's `posix_spawn` runs the child on a `CLONE_VM | CLONE_VFORK`
//! clone instead: nothing is copied, the agent waits only until the
//! `execve`. It covers the common exec (as the agent's own root, no
//! terminal): a new session, stdio on pipes or `/dev/null`, a working
//! directory, SIGPIPE and the signal mask reset as std does. Execs as
//! another user or on a terminal keep `Command` and its fork.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A started process and the agent's ends of its standard streams.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// An `(agent end, child end)` pipe, both close-on-exec; `posix_spawn`'s
/// `dup2` onto 0-2 clears the flag on the child's copy only.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Where `execvp` would find `prog` on `path`: the first regular file
/// that is executable; ENOENT when there is none, EACCES when one exists
/// but may not be run.
fn resolve(prog: &OsStr, path: &OsStr) -> io::Result<CString> {
    if prog.as_bytes().contains(&b'/') {
        return cstring(prog.as_bytes());
    }
    let mut denied = false;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let candidate = cstring(&[dir, b"/", prog.as_bytes()].concat())?;
        let Ok(meta) = std::fs::metadata(OsStr::from_bytes(candidate.as_bytes())) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        // SAFETY: `candidate` is a valid NUL-terminated path.
        if unsafe { libc::access(candidate.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// glibc's spawn attributes and file actions, destroyed on every path.
struct Plan {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl Plan {
    fn new() -> io::Result<Box<Plan>> {
        // SAFETY: both are plain C structs that their init functions fill;
        // zeroed is a valid state to hand to init. Boxed so their address
        // never changes between init and destroy.
        let mut p = Box::new(unsafe { std::mem::zeroed::<Plan>() });
        // SAFETY: valid pointers to the structs just allocated.
        check(unsafe { libc::posix_spawnattr_init(&raw mut p.attr) })?;
        // SAFETY: as above.
        if let Err(e) = check(unsafe { libc::posix_spawn_file_actions_init(&raw mut p.actions) }) {
            // SAFETY: attr was initialised above.
            unsafe { libc::posix_spawnattr_destroy(&raw mut p.attr) };
            return Err(e);
        }
        Ok(p)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `Plan::new`.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&raw mut self.actions);
            libc::posix_spawnattr_destroy(&raw mut self.attr);
        }
    }
}

/// Spawns `cmd` (program, arguments and environment as set on it; the
/// environment must have been cleared first) in its own session, in
/// `dir`, with stdout and stderr on pipes and stdin on a pipe when
/// `stdin`, else `/dev/null`.
pub fn spawn(cmd: &Command, dir: &CString, stdin: bool) -> io::Result<Spawned> {
    let mut env = Vec::new();
    let mut path: &OsStr = OsStr::new(DEFAULT_PATH);
    for (k, v) in cmd.get_envs() {
        let Some(v) = v else { continue };
        if k == "PATH" {
            path = v;
        }
        env.push(cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    let program = resolve(cmd.get_program(), path)?;
    let mut argv = vec![cstring(cmd.get_program().as_bytes())?];
    for a in cmd.get_args() {
        argv.push(cstring(a.as_bytes())?);
    }
    let argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let env_ptrs: Vec<*mut libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();

    let (in_ours, in_child) = if stdin {
        let (r, w) = pipe()?;
        (Some(w), r)
    } else {
        (None, OwnedFd::from(File::open("/dev/null")?))
    };
    let (out_ours, out_child) = pipe()?;
    let (err_ours, err_child) = pipe()?;

    let mut plan = Plan::new()?;
    let p = &mut *plan;
    // SAFETY: every pointer handed to glibc below is valid for the call:
    // the initialised plan, fds we own, NUL-terminated strings and
    // NULL-terminated arrays of them that outlive `posix_spawn`.
    unsafe {
        check(libc::posix_spawn_file_actions_adddup2(
            &raw mut p.actions,
            in_child.as_raw_fd(),
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &raw mut p.actions,
            out_child.as_raw_fd(),
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &raw mut p.actions,
            err_child.as_raw_fd(),
            2,
        ))?;
        check(libc::posix_spawn_file_actions_addchdir_np(
            &raw mut p.actions,
            dir.as_ptr(),
        ))?;
        // As std does for every child: an empty signal mask and SIGPIPE
        // back to its default (Rust ignores it in the agent).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        check(libc::posix_spawnattr_setsigmask(
            &raw mut p.attr,
            &raw const set,
        ))?;
        libc::sigaddset(&raw mut set, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(
            &raw mut p.attr,
            &raw const set,
        ))?;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the POSIX_SPAWN_* flags are small constants of a c_short field"
        )]
        let flags = libc::POSIX_SPAWN_SETSID
            | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        check(libc::posix_spawnattr_setflags(&raw mut p.attr, flags))?;
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &raw mut pid,
            program.as_ptr(),
            &raw const p.actions,
            &raw const p.attr,
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        ))?;
        drop((in_child, out_child, err_child));
        Ok(Spawned {
            pid,
            stdin: in_ours.map(File::from),
            stdout: Some(File::from(out_ours)),
            stderr: Some(File::from(err_ours)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        status
    }

    fn cmd(argv: &[&str]) -> Command {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).env_clear().env("PATH", "/usr/bin:/bin");
        c
    }

    #[test]
    fn runs_with_pipes_dir_env_and_its_own_session() {
        let mut c = cmd(&[
            "sh",
            "-c",
            "read l; echo \"$l $X $(pwd) $$ $(cut -d' ' -f6 /proc/$$/stat)\"; echo e >&2; exit 3",
        ]);
        c.env("X", "x");
        let mut s = spawn(&c, &CString::new("/tmp").unwrap(), true).unwrap();
        s.stdin.take().unwrap().write_all(b"in\n").unwrap();
        let mut out = String::new();
        s.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        s.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = wait(s.pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(&f[..3], ["in", "x", "/tmp"], "{out}");
        // The shell is its session's leader: sid == pid.
        assert_eq!(f[3], f[4], "{out}");
        assert_eq!(err, "e\n");
    }

    #[test]
    fn stdin_is_dev_null_without_a_pipe_and_sigpipe_is_default() {
        let mut s = spawn(&cmd(&["cat"]), &CString::new("/").unwrap(), false).unwrap();
        assert!(s.stdin.is_none());
        let mut out = String::new();
        s.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = wait(s.pid);
        assert!(out.is_empty() && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // With SIGPIPE ignored (as in every Rust process) `yes` would see
        // EPIPE and exit 1; its default kills it.
        let mut s = spawn(&cmd(&["yes"]), &CString::new("/").unwrap(), false).unwrap();
        drop(s.stdout.take());
        let status = wait(s.pid);
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGPIPE);
    }

    #[test]
    fn missing_and_unrunnable_programs_are_errors() {
        let e = spawn(
            &cmd(&["no-such-program"]),
            &CString::new("/").unwrap(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plain");
        std::fs::write(&f, "x").unwrap();
        let mut c = Command::new("plain");
        c.env_clear().env("PATH", dir.path());
        // As root, access(X_OK) fails only without any x bit.
        let e = spawn(&c, &CString::new("/").unwrap(), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        let e = spawn(
            &cmd(&["true"]),
            &CString::new("/no/such/dir").unwrap(),
            false,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
