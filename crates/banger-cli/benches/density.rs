//! Benchmark: how many idle VMs fit. N busybox VMs (256 MiB) and N Debian
//! VMs (systemd, 1 GiB) started warm from one boot template each, left
//! idle, then measured: each QEMU's RSS and PSS (`smaps_rollup`), the
//! daemon's, and the host's own count of what they hold (the drop in
//! `MemAvailable` from before the first VM started: it includes the
//! template's RAM image, which no one VM's PSS shows whole). Then, where
//! the build has it, every VM suspended and measured again, also once the
//! daemon has let go of template RAM no VM maps (after 35 s).
//!
//! `MemAvailable` moves with everything else the kernel caches (a few
//! hundred MiB of dentries come and go), so as root the bench also counts
//! what banger itself holds: it runs in a memory cgroup of its own, and
//! the daemon it starts, the VMMs' groups under the daemon's, the memfds
//! and page cache they charge and the kernel memory they use are all
//! counted in that group's usage (cgroup v2 `memory.current`, v1
//! `memory.usage_in_bytes`), less its usage before the first VM.
//!
//! The same bench drives another build's binaries for the figures before
//! a change: `BANGER_DENSITY_BIN=/path/to/target/debug`. Other knobs:
//! `BANGER_DENSITY_N=10,20` (measured at each count, the VMs of the
//! smaller kept), `BANGER_DENSITY_IMAGES=busybox,debian`,
//! `BANGER_DENSITY_VM_CONFIG` (lines added under `[vm]`, e.g.
//! `tcg_translation_cache = "32M"`), `BANGER_DENSITY_LABEL`.
//!
//! Run (as the tests are, with the kernel package, the Debian tarball and
//! the agent):
//! ```text
//! cargo build --release --workspace --bins && cargo bench -p banger-cli --bench density
//! ```
//! No VM has a NIC (`[network] mode = "none"`): density is memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testkit::procs;

struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Home {
    fn new(bin: &Path, vm_config: &str) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("banger-density-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!("[network]\nmode = \"none\"\n[vm]\nwarm_templates = true\n{vm_config}\n"),
        )
        .unwrap();
        Home {
            dir,
            bin: bin.to_path_buf(),
        }
    }

    /// Runs `banger ARGS`: (success, stdout, stderr).
    fn output(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(self.bin.join("banger"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("BANGER_HOME", self.dir.path().join("data"))
            .env("BANGER_CONFIG", self.dir.path().join("config.toml"))
            .env(
                "BANGER_AGENT_BIN",
                std::env::var_os("BANGER_AGENT_BIN").expect("BANGER_AGENT_BIN"),
            )
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let (ok, out, err) = self.output(args);
        (ok, format!("{out}{err}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "banger {args:?}: {out}");
        out
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let (ok, out, err) = self.output(args);
        assert!(ok, "banger {args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Ok((_, out, _)) = std::panic::catch_unwind(|| self.output(&["vm", "ls", "--json"])) {
            let vms: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            for vm in vms.as_array().into_iter().flatten() {
                if let Some(id) = vm["id"].as_str() {
                    let _ = self.run(&["vm", "kill", id]);
                }
            }
        }
        let _ = self.run(&["daemon", "stop"]);
    }
}

fn mem_available_kib() -> u64 {
    procs::host_available_and_shmem_kib().map_or(0, |(a, _)| a)
}

fn shmem_kib() -> u64 {
    procs::host_available_and_shmem_kib().map_or(0, |(_, s)| s)
}

/// A memory cgroup this bench (and so every daemon it starts, and their
/// VMMs) runs in: its usage is what banger holds.
struct Meter {
    dir: PathBuf,
    /// The group this process came from, to go back to at the end.
    home: PathBuf,
    v2: bool,
}

impl Meter {
    /// Makes the group under this process's own and moves in; none when
    /// that cannot be done (not root, no memory controller).
    fn enter() -> Option<Meter> {
        let me = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let name = format!("banger-density-{}", std::process::id());
        let (dir, v2) = me
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
                let rel = path.trim_start_matches('/');
                if ctrl.split(',').any(|c| c == "memory") {
                    Some((Path::new("/sys/fs/cgroup/memory").join(rel), false))
                } else {
                    None
                }
            })
            .or_else(|| {
                let l = me.lines().find(|l| l.starts_with("0::"))?;
                let rel = l.trim_start_matches("0::").trim_start_matches('/');
                Some((Path::new("/sys/fs/cgroup").join(rel), true))
            })?;
        // v2: beside its own group (a v2 group whose children have
        // controllers may hold no process); v1: under it.
        let home = dir.clone();
        let dir = dir
            .parent()
            .filter(|_| v2)
            .map_or(dir.clone(), Path::to_path_buf)
            .join(name);
        std::fs::create_dir(&dir).ok()?;
        if std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).is_err() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Meter { dir, home, v2 })
    }

    /// Back to the group it came from, and the group removed (once the
    /// daemons it started are gone).
    fn leave(self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// Bytes charged to the group (and the groups under it) now.
    fn usage(&self) -> u64 {
        let f = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(f))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// One `memory.stat` figure (v1: its hierarchical `total_` form).
    fn stat(&self, v2_key: &str, v1_key: &str) -> u64 {
        let key = if self.v2 { v2_key } else { v1_key };
        std::fs::read_to_string(self.dir.join("memory.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `usage` less `base`, with what it is made of: "N MiB (anon, file,
    /// shmem, the rest: kernel)".
    fn line(&self, base: u64) -> String {
        let m = |b: u64| b as f64 / f64::from(1u32 << 20);
        let used = self.usage();
        let (anon, file, shmem) = (
            self.stat("anon", "total_rss"),
            self.stat("file", "total_cache"),
            self.stat("shmem", "total_shmem"),
        );
        format!(
            "banger's cgroup {:7.1} MiB (now {:.1}: anon {:.1}, file {:.1} of it shmem {:.1}, kernel and other {:.1})",
            m(used.saturating_sub(base)),
            m(used),
            m(anon),
            m(file),
            m(shmem),
            m(used.saturating_sub(anon + file))
        )
    }
}

/// Writes back dirty pages and drops the clean page cache (root only):
/// the page cache that is given back on demand out of the count.
fn drop_clean_cache() -> bool {
    let _ = Command::new("sync").status();
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    std::thread::sleep(Duration::from_secs(2));
    dropped
}

/// QEMU pids whose arguments name `dir`.
fn qemus_in(dir: &Path) -> Vec<u32> {
    procs::qemus_mentioning(&format!("{}/", dir.display()))
}

/// Waits until the VMs are idle: their CPU over 5 s below 10% each on
/// average (they booted and settled), at most `max`.
fn settle(pids: &[u32], min: Duration, max: Duration) -> Duration {
    let t = Instant::now();
    std::thread::sleep(min);
    loop {
        let a: u64 = pids.iter().map(|p| procs::cpu_ticks(*p)).sum();
        std::thread::sleep(Duration::from_secs(5));
        let b: u64 = pids.iter().map(|p| procs::cpu_ticks(*p)).sum();
        let per_vm = (b - a) as f64 / 5.0 / pids.len().max(1) as f64; // ticks/s, 100 = 1 CPU
        if per_vm < 10.0 || t.elapsed() > max {
            return t.elapsed();
        }
    }
}

struct Sample {
    rss: Vec<u64>,
    pss: Vec<u64>,
    daemon_rss: u64,
    host: u64,
}

fn sample(pids: &[u32], daemon: u32, baseline: u64) -> Sample {
    let rollups: Vec<_> = pids.iter().map(|&p| procs::rollup_kib(p)).collect();
    Sample {
        rss: rollups.iter().map(|r| r.map_or(0, |r| r.rss)).collect(),
        pss: rollups.iter().map(|r| r.map_or(0, |r| r.pss)).collect(),
        daemon_rss: procs::rss_kib(daemon).unwrap_or(0),
        host: baseline.saturating_sub(mem_available_kib()),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(label: &str, what: &str, n: usize, s: &Sample) {
    let per = |v: &[u64]| mib(v.iter().sum::<u64>()) / v.len().max(1) as f64;
    println!(
        "  {label:<8} {what:<28} N={n:<3} per VM: RSS {:6.1} MiB  PSS {:6.1} MiB | total: PSS {:7.1} MiB  host {:7.1} MiB  (daemon RSS {:.1} MiB)",
        per(&s.rss),
        per(&s.pss),
        mib(s.pss.iter().sum()),
        mib(s.host),
        mib(s.daemon_rss)
    );
}

fn main() {
    let bin = std::env::var_os("BANGER_DENSITY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().to_path_buf()
        });
    let label = std::env::var("BANGER_DENSITY_LABEL").unwrap_or_else(|_| "this".into());
    let counts: Vec<usize> = std::env::var("BANGER_DENSITY_N")
        .unwrap_or_else(|_| "10,20".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let images = std::env::var("BANGER_DENSITY_IMAGES").unwrap_or_else(|_| "busybox,debian".into());
    let vm_config = std::env::var("BANGER_DENSITY_VM_CONFIG").unwrap_or_default();
    let deb = std::env::var("BANGER_TEST_KERNEL_DEB").expect("BANGER_TEST_KERNEL_DEB");
    println!(
        "density: idle VMs from one boot template, QEMU/TCG, 1 vCPU each ({label}: {}; [vm] {vm_config:?})",
        bin.display()
    );
    // Before any daemon starts, so each is born in the group.
    let meter = Meter::enter();
    if meter.is_none() {
        println!("  (no memory cgroup of its own: not root, or no memory controller)");
    }
    for image in images.split(',') {
        let home = Home::new(&bin, &vm_config);
        home.ok(&["kernel", "import", "--deb", &deb]);
        let (memory, idle_min) = match image {
            "debian" => {
                let tar = std::env::var("BANGER_TEST_DEBIAN_TAR").expect("BANGER_TEST_DEBIAN_TAR");
                home.ok(&["image", "import", &tar, "--name", "debian"]);
                ("1G", Duration::from_secs(60))
            }
            _ => {
                let root = home.dir.path().join("busybox");
                banger_testkit::busybox_rootfs(&root);
                home.ok(&[
                    "image",
                    "import",
                    root.to_str().unwrap(),
                    "--name",
                    "busybox",
                ]);
                ("256M", Duration::from_secs(40))
            }
        };
        home.ok(&["warm", "--cpus", "1", "--memory", memory]);
        let daemon = home.json(&["daemon", "status", "--json"])["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap();
        // Quiet host first: the baselines, without clean page cache.
        std::thread::sleep(Duration::from_secs(5));
        drop_clean_cache();
        let baseline = mem_available_kib();
        let cg_base = meter.as_ref().map_or(0, Meter::usage);
        let vms_dir = home.dir.path().join("data/vms");
        let mut started = 0;
        for &n in &counts {
            while started < n {
                let name = format!("{image}{started}");
                home.ok(&[
                    "vm", "create", image, "--name", &name, "--cpus", "1", "--memory", memory,
                ]);
                let r = home.json(&["vm", "start", &name, "--json"]);
                assert_eq!(r["warm"], true, "{r}");
                started += 1;
            }
            let pids = qemus_in(&vms_dir);
            assert_eq!(pids.len(), n, "one QEMU per VM");
            let waited = settle(&pids, idle_min, Duration::from_secs(300));
            // Clean page cache (images, the template's file) is given back
            // on demand: out of both counts, as at the baseline.
            drop_clean_cache();
            let s = sample(&pids, daemon, baseline);
            report(
                &label,
                &format!("{image} {memory} idle {}s", waited.as_secs()),
                n,
                &s,
            );
            if let Some(m) = &meter {
                println!("  {label:<8} {:<28} N={n:<3} {}", "", m.line(cg_base));
            }
        }
        // Suspended, where this build can.
        let names: Vec<String> = (0..started).map(|i| format!("{image}{i}")).collect();
        if home.run(&["vm", "suspend", &names[0]]).0 {
            for name in &names[1..] {
                home.ok(&["vm", "suspend", name]);
            }
            std::thread::sleep(Duration::from_secs(5));
            let left = qemus_in(&vms_dir);
            let s = sample(&left, daemon, baseline);
            let on_disk: u64 = std::fs::read_dir(&vms_dir)
                .unwrap()
                .flatten()
                .filter_map(|d| std::fs::metadata(d.path().join("suspend/qemu.migration")).ok())
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.blocks() * 512 / 1024
                })
                .sum();
            println!(
                "  {label:<8} {:<28} N={started:<3} VMMs left: {} | total: host {:7.1} MiB (daemon RSS {:.1} MiB); saved guests on disk {:.1} MiB",
                format!("{image} suspended"),
                left.len(),
                mib(s.host),
                mib(s.daemon_rss),
                mib(on_disk)
            );
            // What of that is the kernel's cache of the saved guests just
            // written (clean once synced, and given back on demand), and
            // what is held: the same count with the clean cache dropped.
            let dropped = drop_clean_cache();
            let s = sample(&left, daemon, baseline);
            println!(
                "  {label:<8} {:<28} N={started:<3} total: host {:7.1} MiB{}; of it shmem (the templates' sealed RAM) {:.1} MiB",
                format!("{image} suspended, synced"),
                mib(s.host),
                if dropped {
                    " with the clean page cache dropped"
                } else {
                    " (page cache not dropped: not root)"
                },
                mib(shmem_kib())
            );
            if let Some(m) = &meter {
                println!("  {label:<8} {:<28} N={started:<3} {}", "", m.line(cg_base));
            }
            // Once the daemon has let go of the template's RAM no VM maps
            // any more (30 s after the last did, where the build does).
            std::thread::sleep(Duration::from_secs(35));
            drop_clean_cache();
            let s = sample(&left, daemon, baseline);
            println!(
                "  {label:<8} {:<28} N={started:<3} total: host {:7.1} MiB; shmem {:.1} MiB (daemon RSS {:.1} MiB)",
                format!("{image} suspended, 35s later"),
                mib(s.host),
                mib(shmem_kib()),
                mib(s.daemon_rss)
            );
            if let Some(m) = &meter {
                println!("  {label:<8} {:<28} N={started:<3} {}", "", m.line(cg_base));
            }
        }
    }
    if let Some(m) = meter {
        m.leave();
    }
}
