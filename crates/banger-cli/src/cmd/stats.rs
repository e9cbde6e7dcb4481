//! `banger vm stats [VM...] [--json] [--watch]`: per VM its state, uptime,
//! CPU % (inside the guest, and of the VMM process on the host), guest
//! memory used / total and the VMM's RSS, disk used / size of the overlay
//! (`/`) and work (`/root`) disks, and network rx/tx when it has a NIC.
//!
//! The daemon answers cumulative counters (`GET /v1/vms/{ref}/stats`);
//! rates need two samples, so one-shot output waits one interval (as
//! `docker stats --no-stream` does) and `--watch` prints a fresh table, or
//! one JSON line, per interval. CPU % is of one CPU: a busy 2-vCPU guest
//! shows 200 %.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use banger_api::VmStats;
use banger_api::endpoints::{VmsList, VmsShow, VmsStats};
use banger_proto::GuestStats;
use clap::Args;
use serde::Serialize;

use crate::client::{self, Client};
use crate::output;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// VMs (default: every VM)
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    references: Vec<String>,
    /// Print JSON (one line per interval with --watch)
    #[arg(long)]
    json: bool,
    /// Keep printing, every --interval, until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// Seconds between the samples a rate is computed from
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

type Sample = VmStats<GuestStats>;

/// One VM's line, rates computed.
#[derive(Debug, Serialize)]
struct Row {
    id: String,
    name: String,
    state: String,
    uptime_ms: Option<u64>,
    guest_cpu_percent: Option<f64>,
    vmm_cpu_percent: Option<f64>,
    memory_used_bytes: Option<u64>,
    memory_total_bytes: Option<u64>,
    vmm_rss_bytes: Option<u64>,
    disks: Vec<Disk>,
    net_rx_bytes: Option<u64>,
    net_tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guest_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Disk {
    role: String,
    used_bytes: u64,
    size_bytes: u64,
}

fn busy(g: &GuestStats) -> (u64, u64) {
    let c = g.cpu;
    let busy = c.user_ms + c.system_ms;
    (busy, busy + c.idle_ms + c.steal_ms)
}

fn row(prev: Option<&Sample>, s: &Sample) -> Row {
    let guest_cpu_percent = prev.and_then(|p| {
        let (g0, g1) = (p.guest.as_ref()?, s.guest.as_ref()?);
        let ((b0, t0), (b1, t1)) = (busy(g0), busy(g1));
        let dt = t1.checked_sub(t0).filter(|d| *d > 0)?;
        Some(b1.saturating_sub(b0) as f64 / dt as f64 * 100.0 * f64::from(g1.cpus))
    });
    let vmm_cpu_percent = prev.and_then(|p| {
        let (v0, v1) = (p.vmm.as_ref()?, s.vmm.as_ref()?);
        if v0.pid != v1.pid {
            return None;
        }
        let dt = s
            .sampled_at_ms
            .checked_sub(p.sampled_at_ms)
            .filter(|d| *d > 0)?;
        Some(v1.cpu_ms.saturating_sub(v0.cpu_ms) as f64 / dt as f64 * 100.0)
    });
    // The guest's own view of its filesystems when it answered, else the
    // host's view of the image files (allocated / capacity).
    let disks = match &s.guest {
        Some(g) => g
            .disks
            .iter()
            .map(|d| Disk {
                role: if d.path == "/" { "overlay" } else { "work" }.into(),
                used_bytes: d.used_bytes,
                size_bytes: d.total_bytes,
            })
            .collect(),
        None => s
            .disk_files
            .iter()
            .map(|d| Disk {
                role: d.role.clone(),
                used_bytes: d.allocated_bytes,
                size_bytes: d.size_bytes,
            })
            .collect(),
    };
    Row {
        id: s.id.clone(),
        name: s.name.clone(),
        state: s.state.clone(),
        uptime_ms: s.guest.as_ref().map(|g| g.uptime_ms),
        guest_cpu_percent,
        vmm_cpu_percent,
        memory_used_bytes: s.guest.as_ref().map(|g| g.memory.used_bytes),
        memory_total_bytes: s.guest.as_ref().map(|g| g.memory.total_bytes),
        vmm_rss_bytes: s.vmm.as_ref().map(|v| v.rss_bytes),
        disks,
        net_rx_bytes: s.net.as_ref().map(|n| n.rx_bytes),
        net_tx_bytes: s.net.as_ref().map(|n| n.tx_bytes),
        guest_error: s.guest_error.clone(),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn print_table(rows: &[Row]) {
    let pct = |p: f64| format!("{p:.1}%");
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let disk = |role: &str| {
                r.disks.iter().find(|d| d.role == role).map_or_else(
                    || "-".into(),
                    |d| format!("{}/{}", human(d.used_bytes), human(d.size_bytes)),
                )
            };
            vec![
                r.name.clone(),
                r.state.clone(),
                dash(r.uptime_ms, uptime),
                dash(r.guest_cpu_percent, pct),
                dash(r.vmm_cpu_percent, pct),
                match (r.memory_used_bytes, r.memory_total_bytes) {
                    (Some(u), Some(t)) => format!("{}/{}", human(u), human(t)),
                    _ => "-".into(),
                },
                dash(r.vmm_rss_bytes, human),
                disk("overlay"),
                disk("work"),
                match (r.net_rx_bytes, r.net_tx_bytes) {
                    (Some(rx), Some(tx)) => format!("{}/{}", human(rx), human(tx)),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "STATE",
            "UPTIME",
            "CPU",
            "VMM CPU",
            "MEM",
            "VMM RSS",
            "OVERLAY",
            "WORK",
            "NET RX/TX",
        ],
        &lines,
    );
    for r in rows {
        if let Some(e) = &r.guest_error {
            eprintln!("banger: {}: no guest figures: {e}", r.name);
        }
    }
}

async fn sample(c: &Client, ids: &[String]) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(c.call::<VmsStats>(&[id], &()).await?);
    }
    Ok(out)
}

pub async fn run(a: StatsArgs) -> Result<ExitCode> {
    if !(a.interval.is_finite() && (0.05..=3600.0).contains(&a.interval)) {
        anyhow::bail!("--interval must be between 0.05 and 3600 seconds");
    }
    let c = client::daemon().await?;
    let ids: Vec<String> = if a.references.is_empty() {
        let vms = c.call::<VmsList>(&[], &()).await?;
        vms.into_iter().map(|v| v.id).collect()
    } else {
        let mut ids = Vec::new();
        for r in &a.references {
            let vm = c.call::<VmsShow>(&[r], &()).await?;
            ids.push(vm.id);
        }
        ids
    };
    let interval = Duration::from_secs_f64(a.interval);
    let mut prev: HashMap<String, Sample> = sample(&c, &ids)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    loop {
        tokio::time::sleep(interval).await;
        let now = sample(&c, &ids).await?;
        let rows: Vec<Row> = now.iter().map(|s| row(prev.get(&s.id), s)).collect();
        if a.json && a.watch {
            println!("{}", serde_json::to_string(&rows)?);
        } else if a.json {
            output::json(&rows)?;
        } else {
            if a.watch {
                // Clear the screen and go home, like watch(1).
                print!("\x1b[2J\x1b[H");
            }
            print_table(&rows);
        }
        if !a.watch {
            return Ok(ExitCode::SUCCESS);
        }
        prev = now.into_iter().map(|s| (s.id.clone(), s)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::VmmUsage;
    use banger_proto::{CpuTimes, MemoryStats};

    fn s(at: u64, busy: u64, idle: u64, vmm_cpu: u64) -> Sample {
        VmStats {
            id: "i".into(),
            name: "n".into(),
            state: "running".into(),
            sampled_at_ms: at,
            guest: Some(GuestStats {
                uptime_ms: at,
                cpus: 2,
                memory: MemoryStats {
                    total_bytes: 100,
                    available_bytes: 60,
                    used_bytes: 40,
                },
                cpu: CpuTimes {
                    user_ms: busy,
                    system_ms: 0,
                    idle_ms: idle,
                    steal_ms: 0,
                },
                disks: vec![],
            }),
            guest_error: None,
            vmm: Some(VmmUsage {
                pid: 1,
                cpu_ms: vmm_cpu,
                rss_bytes: 5,
            }),
            disk_files: vec![],
            net: None,
        }
    }

    #[test]
    fn rates_from_two_samples() {
        // 2 CPUs over 1 s: 2000 ms of CPU time, 1000 of them busy.
        let r = row(Some(&s(1000, 0, 0, 0)), &s(2000, 1000, 1000, 500));
        assert_eq!(r.guest_cpu_percent, Some(100.0));
        assert_eq!(r.vmm_cpu_percent, Some(50.0));
        assert_eq!(
            (r.memory_used_bytes, r.memory_total_bytes),
            (Some(40), Some(100))
        );
        assert_eq!(row(None, &s(1000, 0, 0, 0)).guest_cpu_percent, None);
        assert_eq!(human(1536), "1.5KiB");
        assert_eq!(uptime(3_725_000), "1h2m");
    }
}
