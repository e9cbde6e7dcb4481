//! `stats`: guest memory, CPU time, uptime and disk usage, read from
//! `/proc/meminfo`, `/proc/stat`, `/proc/uptime` and statvfs(3).

use std::ffi::CString;
use std::fs;
use std::io;

use banger_proto::{CpuTimes, DiskUsage, GuestStats, MemoryStats};

/// The filesystems reported: the root (overlay) and the work disk.
const DISKS: &[&str] = &["/", "/root"];

fn read(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("read {path}: {e}")))
}

pub fn collect() -> io::Result<GuestStats> {
    let memory = memory(&read("/proc/meminfo")?)?;
    let (cpu, cpus) = cpu(&read("/proc/stat")?, clock_ticks())?;
    let uptime_ms = uptime_ms(&read("/proc/uptime")?)?;
    let mut disks = Vec::new();
    for path in DISKS {
        if let Some(d) = disk(path)? {
            disks.push(d);
        }
    }
    Ok(GuestStats {
        uptime_ms,
        cpus,
        memory,
        cpu,
        disks,
    })
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {what}"))
}

fn memory(meminfo: &str) -> io::Result<MemoryStats> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal").ok_or_else(|| bad("/proc/meminfo: no MemTotal"))?;
    // MemAvailable exists since Linux 3.14; older kernels get free memory.
    let available = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .ok_or_else(|| bad("/proc/meminfo: no MemAvailable"))?;
    Ok(MemoryStats {
        total_bytes: total,
        available_bytes: available,
        used_bytes: total.saturating_sub(available),
    })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn cpu(stat: &str, hz: u64) -> io::Result<(CpuTimes, u32)> {
    let total = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad("/proc/stat: no cpu line"))?;
    let v: Vec<u64> = total
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0) * 1000 / hz;
    // user nice system idle iowait irq softirq steal
    let times = CpuTimes {
        user_ms: at(0) + at(1),
        system_ms: at(2) + at(5) + at(6),
        idle_ms: at(3) + at(4),
        steal_ms: at(7),
    };
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Ok((times, u32::try_from(cpus).unwrap_or(u32::MAX)))
}

fn uptime_ms(uptime: &str) -> io::Result<u64> {
    let secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("/proc/uptime"))?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "uptime in ms fits u64 for 500 million years"
    )]
    Ok((secs * 1000.0) as u64)
}

/// statvfs of `path`; `None` when it does not exist.
fn disk(path: &str) -> io::Result<Option<DiskUsage>> {
    let c = CString::new(path).map_err(|_| bad("nul in path"))?;
    // SAFETY: statvfs is plain old data; zeroed is valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut s) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(io::Error::new(e.kind(), format!("statvfs {path}: {e}")));
    }
    let frsize = s.f_frsize;
    Ok(Some(DiskUsage {
        path: path.to_owned(),
        total_bytes: s.f_blocks * frsize,
        used_bytes: (s.f_blocks - s.f_bfree) * frsize,
        available_bytes: s.f_bavail * frsize,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_stat_and_uptime() {
        let m = memory("MemTotal:        1000 kB\nMemFree:  100 kB\nMemAvailable:     400 kB\n")
            .unwrap();
        assert_eq!(
            (m.total_bytes, m.available_bytes, m.used_bytes),
            (1_024_000, 409_600, 614_400)
        );
        let (c, n) = cpu(
            "cpu  100 10 50 1000 5 1 2 3 0 0\ncpu0 50 5 25 500 2 0 1 1 0 0\ncpu1 50 5 25 500 3 1 1 2 0 0\nintr 1\n",
            100,
        )
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            (c.user_ms, c.system_ms, c.idle_ms, c.steal_ms),
            (1100, 530, 10050, 30)
        );
        assert_eq!(uptime_ms("12.34 20.00\n").unwrap(), 12_340);
    }

    #[test]
    fn collects_on_this_machine() {
        let s = collect().unwrap();
        assert!(s.memory.total_bytes > s.memory.used_bytes);
        assert!(s.cpus >= 1 && s.uptime_ms > 0);
        let root = s.disks.iter().find(|d| d.path == "/").unwrap();
        assert!(root.total_bytes >= root.used_bytes && root.total_bytes > 0);
    }
}
