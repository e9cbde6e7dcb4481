//! Crash consistency: each operation (kernel import, image import, image
//! pull from a registry on loopback, vm create, start, stop, restart,
//! pause, suspend, wake, snapshot, restore in place and as a new VM, fork,
//! rm) is started,
//! the daemon is SIGKILLed at a random moment within the operation's
//! measured duration, a new daemon starts, and the invariants of
//! ARCHITECTURE.md are checked:
//!
//! - every record's files exist and are whole (ext4 images pass `e2fsck -fn`,
//!   cache blobs hash to their names);
//! - no directory under `vms/`, `images/`, `kernels/`, `snapshots/` without
//!   a record, no snapshot left `saving`, and `tmp/` is empty;
//! - no worker, tool or `faked` without a live daemon above it;
//! - a VM recorded running has a live VMM; one recorded stopped has none;
//! - every VM has its known_hosts line and no line names a VM that is gone;
//! - the operation's own check: after a snapshot or fork its source VM runs
//!   (not paused) and answers an exec; after a pause the VM is recorded
//!   paused (and resumes) or answers; after a suspend or a wake the VM is
//!   suspended (no VMM) or runs, and answers (waking); a VM a restore or fork made carries
//!   its own hostname (a half-restored one must be gone);
//! - the interrupted operation, run again, succeeds;
//! - the windows a random kill rarely hits, made by hand (`forced_windows`:
//!   a removal between its move to `tmp/` and the row's delete, a create
//!   between the row and its known_hosts line) come back whole.
//!
//! The network setup is a second test: a home inside a network namespace
//! the test creates (never the host's), `vm start` of a VM with a NIC
//! killed at a random moment; then no tap without a running VM, the
//! `inet banger` table as it is with the running VMs (no rule naming a
//! stopped VM's address), and the VM, started again, pings its gateway.
//!
//! `BANGER_CHAOS_ITERATIONS` (default 3) kills per operation: CI runs a few,
//! a soak run thousands. `BANGER_CHAOS_SEED` replays a run's kill delays.
//! `BANGER_CHAOS_OPS=snapshot,fork` runs only the operations whose names
//! contain one of those words (to soak one area).

use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_testkit::netns::NetNs;
use banger_testkit::{TestHome, boot_home, boot_home_with};

// Not a test target of its own: only `tests/*.rs` and `tests/*/main.rs` are.
#[path = "chaos/invariants.rs"]
mod invariants;
use invariants::{answers_as, check_invariants};

/// splitmix64: enough randomness for kill delays, and replayable.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("BANGER_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos().into())
                    .unwrap_or(1)
            });
        eprintln!("chaos: BANGER_CHAOS_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, d).
    fn below(&mut self, d: Duration) -> Duration {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.next() % nanos)
    }
}

/// Whether `BANGER_CHAOS_OPS` (comma-separated words; unset: all) picks
/// the operation `name`.
fn selected(name: &str) -> bool {
    match std::env::var("BANGER_CHAOS_OPS") {
        Ok(words) if !words.trim().is_empty() => words
            .split(',')
            .map(str::trim)
            .any(|w| !w.is_empty() && name.contains(w)),
        _ => true,
    }
}

fn iterations() -> usize {
    std::env::var("BANGER_CHAOS_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// One operation under chaos: `setup` prepares iteration `i` (untimed),
/// `args` is the command, `verify` returns what is wrong right after a
/// kill (beyond [`check_invariants`]), `done` says whether its effect is
/// there and `cleanup` undoes it for the next iteration.
struct Op<'a> {
    name: &'a str,
    setup: &'a dyn Fn(&TestHome, usize),
    args: &'a dyn Fn(usize) -> Vec<String>,
    verify: &'a dyn Fn(&TestHome, usize) -> Vec<String>,
    done: &'a dyn Fn(&TestHome, usize) -> bool,
    cleanup: &'a dyn Fn(&TestHome, usize),
}

fn nothing_more(_: &TestHome, _: usize) -> Vec<String> {
    Vec::new()
}

/// Run `op` once untimed to learn its duration, then `n` times with a kill.
/// Returns (kills, violations).
fn chaos(
    home: &TestHome,
    rng: &mut Rng,
    op: &Op<'_>,
    n: usize,
    extra: &dyn Fn(&TestHome) -> Vec<String>,
) -> (usize, Vec<String>) {
    let run = |i: usize| {
        let args = (op.args)(i);
        let out = home
            .banger_std()
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            op.name,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    (op.setup)(home, 0);
    let t = Instant::now();
    run(0);
    let duration = t.elapsed();
    (op.cleanup)(home, 0);

    let mut violations = Vec::new();
    for i in 1..=n {
        (op.setup)(home, i);
        let daemon = home.json(&["daemon", "status", "--json"])["pid"]
            .as_i64()
            .unwrap();
        let delay = rng.below(duration);
        let mut child = home
            .banger_std()
            .args((op.args)(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        banger_testkit::kill9(daemon);
        let _ = child.wait();
        let mut found = check_invariants(home);
        found.extend(extra(home));
        found.extend((op.verify)(home, i));
        for v in &found {
            eprintln!("chaos: {} #{i} (kill at {delay:?}): {v}", op.name);
        }
        violations.extend(found.into_iter().map(|v| format!("{} #{i}: {v}", op.name)));
        if !(op.done)(home, i) {
            run(i);
        }
        assert!(
            (op.done)(home, i),
            "{} #{i}: not done after a rerun",
            op.name
        );
        (op.cleanup)(home, i);
    }
    eprintln!(
        "chaos: {}: {n} kills within {duration:?}, {} violations",
        op.name,
        violations.len()
    );
    (n, violations)
}

/// Whether a `what` (kernel, image, vm, snapshot) named exactly `name`
/// exists: by the listing, since `show` also takes an id prefix and `f3`
/// may well begin another object's id.
fn exists(home: &TestHome, what: &str, name: &str) -> bool {
    home.json(&[what, "ls", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == name)
}

fn vm_state(home: &TestHome, name: &str) -> String {
    home.json(&["vm", "show", name, "--json"])["desired_state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn daemon_killed_anywhere_leaves_nothing_lost_or_leaked() {
    let Some(home) = boot_home() else { return };
    let deb = banger_testkit::kernel_deb().unwrap();
    let deb = deb.to_str().unwrap().to_string();
    let rootfs = home.path().join("busybox");
    let rootfs = rootfs.to_str().unwrap().to_string();
    let mut rng = Rng::from_env();
    let n = iterations();
    let none = |_: &TestHome, _: usize| {};

    let registry = banger_testkit::registry::Registry::start();
    let layout = tempfile::tempdir().unwrap();
    banger_testkit::registry::single_image_layout(
        layout.path(),
        "1",
        &banger_testkit::registry::minimal_busybox_image(),
    );
    registry.push(layout.path(), "1", "chaos/bb:1", None, false);
    let pull_ref = format!("{}/chaos/bb:1", registry.addr);
    let pull_args =
        |i: usize| strings(&["image", "pull", &pull_ref, "--name", &format!("pull{i}")]);
    let kernel_args = |i: usize| {
        strings(&[
            "kernel",
            "import",
            "--deb",
            &deb,
            "--name",
            &format!("k{i}"),
        ])
    };
    let image_args =
        |i: usize| strings(&["image", "import", &rootfs, "--name", &format!("img{i}")]);
    let create_args = |i: usize| {
        strings(&[
            "vm",
            "create",
            "busybox",
            "--memory",
            "256M",
            "--name",
            &format!("c{i}"),
        ])
    };
    let create_vm = |home: &TestHome, i: usize| {
        home.ok(&[
            "vm",
            "create",
            "busybox",
            "--memory",
            "256M",
            "--name",
            &format!("v{i}"),
        ]);
    };
    let start_vm = |home: &TestHome, i: usize| {
        create_vm(home, i);
        home.ok(&["vm", "start", &format!("v{i}")]);
    };
    let start_and_snapshot = |home: &TestHome, i: usize| {
        start_vm(home, i);
        home.ok(&[
            "vm",
            "snapshot",
            &format!("v{i}"),
            "--name",
            &format!("s{i}"),
        ]);
    };
    let rm_vm = |home: &TestHome, i: usize| {
        home.ok(&["vm", "rm", "-f", &format!("v{i}")]);
    };
    let ops = [
        Op {
            name: "kernel import",
            setup: &none,
            args: &kernel_args,
            verify: &nothing_more,
            done: &|h, i| exists(h, "kernel", &format!("k{i}")),
            cleanup: &|h, i| {
                h.ok(&["kernel", "rm", &format!("k{i}")]);
            },
        },
        Op {
            name: "image import",
            setup: &none,
            args: &image_args,
            verify: &nothing_more,
            done: &|h, i| exists(h, "image", &format!("img{i}")),
            cleanup: &|h, i| {
                h.ok(&["image", "rm", &format!("img{i}")]);
            },
        },
        Op {
            name: "image pull",
            // Each round starts from an empty blob cache, so a kill can
            // land in the download as well as in the build.
            setup: &|h, _| {
                h.ok(&["image", "prune"]);
            },
            args: &pull_args,
            verify: &nothing_more,
            done: &|h, i| exists(h, "image", &format!("pull{i}")),
            cleanup: &|h, i| {
                h.ok(&["image", "rm", &format!("pull{i}")]);
            },
        },
        Op {
            name: "vm create",
            setup: &none,
            args: &create_args,
            verify: &nothing_more,
            done: &|h, i| exists(h, "vm", &format!("c{i}")),
            cleanup: &|h, i| {
                h.ok(&["vm", "rm", &format!("c{i}")]);
            },
        },
        Op {
            name: "vm start",
            setup: &create_vm,
            args: &|i| strings(&["vm", "start", &format!("v{i}")]),
            verify: &nothing_more,
            done: &|h, i| vm_state(h, &format!("v{i}")) == "running",
            cleanup: &rm_vm,
        },
        Op {
            name: "vm stop",
            setup: &start_vm,
            args: &|i| strings(&["vm", "stop", &format!("v{i}")]),
            verify: &nothing_more,
            done: &|h, i| vm_state(h, &format!("v{i}")) == "stopped",
            cleanup: &rm_vm,
        },
        Op {
            name: "vm restart",
            setup: &start_vm,
            args: &|i| strings(&["vm", "restart", &format!("v{i}")]),
            verify: &nothing_more,
            // A restart cut short may leave the VM stopped or running.
            done: &|h, i| vm_state(h, &format!("v{i}")) == "running",
            cleanup: &rm_vm,
        },
        Op {
            name: "vm pause",
            setup: &start_vm,
            args: &|i| strings(&["vm", "pause", &format!("v{i}")]),
            // Recorded paused (then `vm resume` brings it back), or
            // running and answering: never frozen while recorded running.
            verify: &|h, i| {
                let vm = format!("v{i}");
                let paused = h.json(&["vm", "show", &vm, "--json"])["paused"] == true;
                if paused {
                    h.ok(&["vm", "resume", &vm]);
                }
                answers_as(h, &vm)
            },
            done: &|h, i| h.json(&["vm", "show", &format!("v{i}"), "--json"])["paused"] == true,
            cleanup: &rm_vm,
        },
        Op {
            name: "vm suspend",
            setup: &start_vm,
            args: &|i| strings(&["vm", "suspend", &format!("v{i}")]),
            // Suspended or running, never frozen or lost: either way the
            // next exec reaches the guest (waking it when suspended).
            verify: &|h, i| answers_as(h, &format!("v{i}")),
            done: &|h, i| h.json(&["vm", "show", &format!("v{i}"), "--json"])["suspended"] == true,
            cleanup: &rm_vm,
        },
        Op {
            name: "vm wake",
            setup: &|h, i| {
                start_vm(h, i);
                h.ok(&["vm", "suspend", &format!("v{i}")]);
            },
            // Any use wakes it; the wake cut short leaves it suspended
            // (the state not consumed) or running, never both or neither.
            args: &|i| strings(&["vm", "exec", &format!("v{i}"), "--", "true"]),
            verify: &|h, i| answers_as(h, &format!("v{i}")),
            done: &|h, i| {
                let vm = format!("v{i}");
                answers_as(h, &vm).is_empty()
                    && h.json(&["vm", "show", &vm, "--json"])["suspended"] == false
            },
            cleanup: &rm_vm,
        },
        Op {
            name: "vm snapshot",
            setup: &start_vm,
            args: &|i| {
                strings(&[
                    "vm",
                    "snapshot",
                    &format!("v{i}"),
                    "--name",
                    &format!("s{i}"),
                ])
            },
            // The save froze the source: it must run again, unfrozen.
            verify: &|h, i| answers_as(h, &format!("v{i}")),
            done: &|h, i| exists(h, "snapshot", &format!("s{i}")),
            cleanup: &|h, i| {
                h.ok(&["snapshot", "rm", &format!("s{i}")]);
                h.ok(&["vm", "rm", "-f", &format!("v{i}")]);
            },
        },
        Op {
            name: "vm restore --name",
            setup: &start_and_snapshot,
            args: &|i| {
                strings(&[
                    "vm",
                    "restore",
                    &format!("s{i}"),
                    "--name",
                    &format!("r{i}"),
                ])
            },
            // A VM the restore made is whole (its own identity) or gone.
            verify: &|h, i| {
                let new = format!("r{i}");
                if exists(h, "vm", &new) {
                    answers_as(h, &new)
                } else {
                    Vec::new()
                }
            },
            done: &|h, i| {
                let new = format!("r{i}");
                exists(h, "vm", &new) && answers_as(h, &new).is_empty()
            },
            cleanup: &|h, i| {
                h.ok(&["vm", "rm", "-f", &format!("r{i}")]);
                h.ok(&["snapshot", "rm", &format!("s{i}")]);
                h.ok(&["vm", "rm", "-f", &format!("v{i}")]);
            },
        },
        Op {
            name: "vm restore in place",
            setup: &|h, i| {
                start_and_snapshot(h, i);
                h.ok(&["vm", "stop", &format!("v{i}")]);
            },
            args: &|i| strings(&["vm", "restore", &format!("s{i}")]),
            // Whole and running, or left stopped to restore again.
            verify: &|h, i| {
                let vm = format!("v{i}");
                if vm_state(h, &vm) == "running" {
                    answers_as(h, &vm)
                } else {
                    Vec::new()
                }
            },
            done: &|h, i| {
                let vm = format!("v{i}");
                vm_state(h, &vm) == "running" && answers_as(h, &vm).is_empty()
            },
            cleanup: &|h, i| {
                h.ok(&["snapshot", "rm", &format!("s{i}")]);
                h.ok(&["vm", "rm", "-f", &format!("v{i}")]);
            },
        },
        Op {
            name: "vm fork",
            setup: &start_vm,
            args: &|i| strings(&["vm", "fork", &format!("v{i}"), &format!("f{i}")]),
            verify: &|h, i| {
                let mut bad = answers_as(h, &format!("v{i}"));
                let new = format!("f{i}");
                if exists(h, "vm", &new) {
                    bad.extend(answers_as(h, &new));
                }
                bad
            },
            done: &|h, i| {
                let new = format!("f{i}");
                exists(h, "vm", &new) && answers_as(h, &new).is_empty()
            },
            cleanup: &|h, i| {
                h.ok(&["vm", "rm", "-f", &format!("f{i}")]);
                h.ok(&["vm", "rm", "-f", &format!("v{i}")]);
            },
        },
        Op {
            name: "vm rm",
            setup: &start_vm,
            args: &|i| strings(&["vm", "rm", "-f", &format!("v{i}")]),
            verify: &nothing_more,
            done: &|h, i| !exists(h, "vm", &format!("v{i}")),
            cleanup: &none,
        },
    ];
    let mut report = Vec::new();
    let mut all = Vec::new();
    for op in ops.iter().filter(|op| selected(op.name)) {
        let (kills, violations) = chaos(&home, &mut rng, op, n, &|_| Vec::new());
        report.push(format!(
            "{}: {kills} kills, {} violations",
            op.name,
            violations.len()
        ));
        all.extend(violations);
    }
    if selected("windows") {
        let found = forced_windows(&home);
        report.push(format!("forced windows: {} violations", found.len()));
        all.extend(found);
    }
    eprintln!("chaos summary:\n  {}", report.join("\n  "));
    assert!(all.is_empty(), "violations:\n{}", all.join("\n"));
}

/// The crash windows a random kill rarely hits, made by hand with the
/// daemon down: a removal that had moved a VM's and an image's directory
/// to `tmp/` and died before deleting the rows, and a create that died
/// between the row and the VM's known_hosts line (the order before lines
/// came first; VMs from then still have it). The next daemon must put the
/// directories back and the line too, or the invariants say what is wrong.
fn forced_windows(home: &TestHome) -> Vec<String> {
    home.ok(&[
        "vm", "create", "busybox", "--memory", "256M", "--name", "w0",
    ]);
    home.ok(&[
        "image",
        "import",
        &home.path().join("busybox").display().to_string(),
        "--name",
        "wimg",
    ]);
    let vm = home.json(&["vm", "show", "w0", "--json"]);
    let img = home.json(&["image", "show", "wimg", "--json"]);
    let (vm_id, img_id) = (vm["id"].as_str().unwrap(), img["id"].as_str().unwrap());
    home.ok(&["daemon", "stop"]);
    let data = home.data_dir();
    std::fs::rename(
        data.join("vms").join(vm_id),
        data.join(format!("tmp/vm-rm-{vm_id}")),
    )
    .unwrap();
    std::fs::rename(
        data.join("images").join(img_id),
        data.join(format!("tmp/image-rm-{img_id}")),
    )
    .unwrap();
    let hosts = data.join("ssh/known_hosts");
    let text = std::fs::read_to_string(&hosts).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(&format!("banger-vm-{vm_id}")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&hosts, kept).unwrap();
    let found = check_invariants(home);
    for v in &found {
        eprintln!("chaos: forced windows: {v}");
    }
    home.ok(&["vm", "rm", "w0"]);
    home.ok(&["image", "rm", "wimg"]);
    found
}

/// The taps (`bgt` + the start of a VM id) in `ns`.
fn taps(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("bgt"))
        .collect()
}

/// The rules of `inet banger` in `ns`, handles dropped, one a line.
fn banger_rules(ns: &NetNs) -> Vec<String> {
    let out = ns
        .command("nft")
        .args(["list", "table", "inet", "banger"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("table") && !l.starts_with('}'))
        .map(|l| l.split(" # handle").next().unwrap_or(l).to_string())
        .collect()
}

/// Network invariants in `ns` with the next daemon up: one tap per VM
/// recorded running and none other, and the table as `baseline` (taken
/// with one VM running: no published ports, so no per-VM rules) with no
/// rule naming a VM that is not running.
fn network_violations(home: &TestHome, ns: &NetNs, baseline: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    let vms = home.json(&["vm", "ls", "--json"]);
    let vms = vms.as_array().unwrap();
    let running: Vec<&str> = vms
        .iter()
        .filter(|v| v["desired_state"] == "running")
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    let taps = taps(ns);
    for t in &taps {
        if !running.iter().any(|id| id.starts_with(&t[3..])) {
            bad.push(format!("tap {t} without a running VM"));
        }
    }
    if taps.len() != running.len() {
        bad.push(format!(
            "{} taps for {} running VMs: {taps:?}",
            taps.len(),
            running.len()
        ));
    }
    let rules = banger_rules(ns);
    if !running.is_empty() && rules != baseline {
        bad.push(format!("inet banger is {rules:#?}, not {baseline:#?}"));
    }
    for v in vms.iter().filter(|v| v["desired_state"] != "running") {
        let ip = v["guest_ip"].as_str().unwrap_or("-");
        if let Some(r) = rules
            .iter()
            .find(|r| r.contains(&format!("{ip} ")) || r.ends_with(ip))
        {
            bad.push(format!("rule for stopped vm {}: {r}", v["name"]));
        }
    }
    bad
}

/// `vm start` of a VM with a NIC, killed anywhere, in a namespace of the
/// test's own.
#[test]
fn daemon_killed_during_network_setup_leaves_no_tap_or_rule() {
    let host = NetNs::new("chaosh");
    let inet = NetNs::new("chaosi");
    host.veth("up0", &inet, "eth0");
    host.ip(&["addr", "add", "10.201.0.1/24", "dev", "up0"]);
    inet.ip(&["addr", "add", "10.201.0.2/24", "dev", "eth0"]);
    host.ip(&["route", "add", "default", "via", "10.201.0.2"]);
    let config = "[network]\nmode = \"bridge\"\nbridge_cidr = \"172.31.0.1/24\"\n\
                  dns_upstreams = [\"10.201.0.2:53\"]\n";
    let Some(home) = boot_home_with(TestHome::with_config(config).in_netns(host.name())) else {
        return;
    };
    let mut rng = Rng::from_env();
    let n = iterations();
    let pings = |h: &TestHome, vm: &str| {
        h.banger_std()
            .args([
                "vm",
                "exec",
                vm,
                "--",
                "busybox",
                "ping",
                "-c1",
                "-W5",
                "172.31.0.1",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    // The table with one VM running, no ports published.
    home.ok(&[
        "vm", "create", "busybox", "--memory", "256M", "--name", "base",
    ]);
    home.ok(&["vm", "start", "base"]);
    let baseline = banger_rules(&host);
    assert!(
        !baseline.is_empty(),
        "no inet banger table with a VM running"
    );
    assert!(pings(&home, "base"), "the first VM cannot ping its gateway");
    home.ok(&["vm", "rm", "-f", "base"]);
    assert!(taps(&host).is_empty(), "rm left a tap: {:?}", taps(&host));

    let op = Op {
        name: "vm start with a NIC",
        setup: &|h, i| {
            h.ok(&[
                "vm",
                "create",
                "busybox",
                "--memory",
                "256M",
                "--name",
                &format!("n{i}"),
            ]);
        },
        args: &|i| strings(&["vm", "start", &format!("n{i}")]),
        // A VM the killed daemon left booting is adopted by the next one
        // and may still be coming up: give its guest a minute to answer.
        verify: &nothing_more,
        done: &|h, i| {
            let vm = format!("n{i}");
            vm_state(h, &vm) == "running"
                && (0..20).any(|_| {
                    pings(h, &vm) || {
                        std::thread::sleep(Duration::from_secs(3));
                        false
                    }
                })
        },
        cleanup: &|h, i| {
            h.ok(&["vm", "rm", "-f", &format!("n{i}")]);
        },
    };
    let (kills, violations) = chaos(&home, &mut rng, &op, n, &|h| {
        network_violations(h, &host, &baseline)
    });
    assert!(
        taps(&host).is_empty(),
        "taps left at the end: {:?}",
        taps(&host)
    );
    eprintln!(
        "chaos summary:\n  {}: {kills} kills, {} violations",
        op.name,
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}
