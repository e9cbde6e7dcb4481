//! Identifying, checking and killing VMM processes by pid + start time.

use std::io;

/// Start time (clock ticks since boot) and state of a process, from
/// `/proc/PID/stat` (procfs).
pub fn stat(pid: i32) -> io::Result<(u64, char)> {
    let stat = procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_err(|e| match e {
            procfs::ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
            other => io::Error::other(other.to_string()),
        })?;
    Ok((stat.starttime, stat.state))
}

/// The start time of `pid`, for [`crate::VmHandles::pid_start_time`].
pub fn start_time(pid: i32) -> io::Result<u64> {
    stat(pid).map(|(t, _)| t)
}

/// Whether `pid` is still the process that started at `start_time` and
/// has not exited (a zombie has).
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Ok((t, state)) if t == start_time && state != 'Z' && state != 'X')
}

/// SIGKILLs the process if it is still the one we started.
pub fn kill(pid: i32, start_time: u64) -> crate::Result<()> {
    if !is_alive(pid, start_time) {
        return Ok(());
    }
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(crate::VmmError::Io {
                op: "kill",
                path: format!("pid {pid}"),
                source: e,
            });
        }
    }
    Ok(())
}

/// VMM processes (program `qemu-system-*` or `firecracker`) with an
/// argument that contains `needle` (a VM's directory), as (pid, start
/// time). Finds a VMM whose handles were never written: a daemon killed
/// after the VMM started and before `handles.json` was saved.
pub fn vmms_naming(needle: &str) -> Vec<(i32, u64)> {
    let Ok(procs) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let pid = p.pid;
        let Ok(cmdline) = p.cmdline() else {
            continue;
        };
        let mut args = cmdline.into_iter();
        let Some(program) = args.next() else { continue };
        let base = program.rsplit('/').next().unwrap_or(&program);
        if !(base.starts_with("qemu-system") || base == "firecracker") {
            continue;
        }
        if args.any(|a| a.contains(needle))
            && let Ok((start, state)) = stat(pid)
            && state != 'Z'
            && state != 'X'
        {
            out.push((pid, start));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(is_alive(me, t));
        assert!(!is_alive(me, t + 1));
        assert!(!is_alive(i32::MAX, t));
    }

    #[test]
    fn reaped_child_is_not_alive() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        let t = start_time(pid).unwrap_or(0);
        c.wait().unwrap();
        assert!(!is_alive(pid, t));
    }
}
