//! What tests ask of the host's processes, read with procfs (the one /proc
//! parser of the workspace): is a pid alive (zombies are not), its parent,
//! name, command line and environment, memory (resident, high-water mark,
//! huge pages on or off, `smaps_rollup`), CPU time, the files it holds
//! open, and which live processes mention a path; and the host's
//! `/proc/meminfo`.

use procfs::Current;
use procfs::process::{Process, all_processes};

/// Whether `pid` runs (a zombie, reaped by whatever PID 1 the host runs,
/// counts as dead).
pub fn alive(pid: i64) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| Process::new(pid).ok()?.stat().ok())
        .is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Every pid of the host, at this instant.
pub fn all_pids() -> Vec<u32> {
    all_processes()
        .map(|ps| {
            ps.flatten()
                .filter_map(|p| u32::try_from(p.pid).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// The name and parent pid of a live (not zombie) process.
pub fn name_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = process(pid)?.stat().ok()?;
    if stat.state == 'Z' {
        return None;
    }
    Some((stat.comm, u32::try_from(stat.ppid).ok()?))
}

/// The command line, its arguments joined by spaces; empty when unreadable.
pub fn cmdline(pid: u32) -> String {
    process(pid)
        .and_then(|p| p.cmdline().ok())
        .map(|args| args.join(" "))
        .unwrap_or_default()
}

/// Whether the process's environment holds `var=value`.
pub fn has_env(pid: u32, var: &str, value: &str) -> bool {
    process(pid)
        .and_then(|p| p.environ().ok())
        .is_some_and(|env| {
            env.get(std::ffi::OsStr::new(var))
                .is_some_and(|v| v == value)
        })
}

/// The owner uid of the process.
pub fn uid_of(pid: u32) -> Option<u32> {
    process(pid)?.uid().ok()
}

/// Peak resident memory (VmHWM), KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmhwm
}

/// Resident memory (VmRSS), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    process(pid)?.status().ok()?.vmrss
}

/// What a process's `smaps_rollup` says of its memory, KiB.
#[derive(Debug, Clone, Copy)]
pub struct Rollup {
    /// Resident (`Rss`).
    pub rss: u64,
    /// Proportional: each shared page divided among its mappers (`Pss`).
    pub pss: u64,
    /// The part of `pss` that is shared memory, memfds included (`Pss_Shmem`).
    pub pss_shmem: u64,
}

/// The process's `smaps_rollup`, read once.
pub fn rollup_kib(pid: u32) -> Option<Rollup> {
    let rollup = process(pid)?.smaps_rollup().ok()?;
    let m = &rollup.memory_map_rollup.0.first()?.extension.map;
    Some(Rollup {
        rss: m.get("Rss")? >> 10,
        pss: m.get("Pss")? >> 10,
        pss_shmem: m.get("Pss_Shmem")? >> 10,
    })
}

/// The host's `MemAvailable` and `Shmem`, KiB.
pub fn host_available_and_shmem_kib() -> Option<(u64, u64)> {
    let m = procfs::Meminfo::current().ok()?;
    Some((m.mem_available? >> 10, m.shmem? >> 10))
}

/// Whether transparent huge pages are on for the process
/// (`THP_enabled`, off after `PR_SET_THP_DISABLE`).
pub fn thp_enabled(pid: u32) -> Option<bool> {
    process(pid)?.status().ok()?.thp_enabled
}

/// CPU time used so far, user and system, in clock ticks; 0 once gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    process(pid)
        .and_then(|p| p.stat().ok())
        .map_or(0, |s| s.utime + s.stime)
}

/// Live processes whose command line mentions `needle`.
pub fn mentioning(needle: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| name_and_parent(*pid).is_some() && cmdline(*pid).contains(needle))
        .collect()
}

/// Live QEMUs (`qemu-system-*`) whose command line mentions `needle`.
pub fn qemus_mentioning(needle: &str) -> Vec<u32> {
    mentioning(needle)
        .into_iter()
        .filter(|pid| cmdline(*pid).starts_with("qemu-system"))
        .collect()
}

/// How many of the process's open descriptors are files or memfds whose
/// name contains `needle`.
pub fn open_files_naming(pid: u32, needle: &str) -> usize {
    use procfs::process::FDTarget;
    process(pid).and_then(|p| p.fd().ok()).map_or(0, |fds| {
        fds.flatten()
            .filter(|fd| match &fd.target {
                FDTarget::Path(p) => p.to_string_lossy().contains(needle),
                FDTarget::MemFD(name) => name.contains(needle),
                _ => false,
            })
            .count()
    })
}

/// Whether the process has a socket open (a client connected to its
/// daemon, say).
pub fn has_socket(pid: u32) -> bool {
    process(pid).and_then(|p| p.fd().ok()).is_some_and(|fds| {
        fds.flatten()
            .any(|fd| matches!(fd.target, procfs::process::FDTarget::Socket(_)))
    })
}
