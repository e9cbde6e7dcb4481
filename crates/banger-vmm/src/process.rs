//! Identifying, checking and killing VMM processes by pid + start time.

use std::io;

/// Start time (field 22 of `/proc/PID/stat`, clock ticks since boot) and
/// state (field 3) of a process.
pub fn stat(pid: i32) -> io::Result<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&s).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the *last* `)`.
fn parse_stat(s: &str) -> Option<(u64, char)> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3; field 22 is 19 further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
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
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned());
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
    fn parses_names_with_spaces_and_parens() {
        let line = "123 (qemu (x) y) S 1 123 123 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 98765 0 0";
        assert_eq!(parse_stat(line), Some((98765, 'S')));
    }

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
