//! Benchmark: boot to agent under QEMU, banger's built kernel
//! (`scripts/build-kernel.sh`: everything built in, no modules disk) against
//! Debian's cloud kernel, alternating in one run.
//!
//! Run (needs what the tests need, plus the built kernel's directory):
//! ```text
//! BANGER_TEST_KERNEL_DEB=$(scripts/fetch-kernel.sh .cache) \
//! BANGER_AGENT_BIN=$(scripts/build-agent.sh) \
//! BANGER_TEST_BUILT_KERNEL=$(scripts/build-kernel.sh) \
//! cargo build --release --workspace && cargo bench -p banger-cli --bench kernel_boot
//! ```
//!
//! Each round starts one VM per kernel, in alternating order (A B, B A, ...)
//! so drift on a shared host lands on both. Per start it records the
//! daemon's own stage timings (`boot_ms`: VMM spawned to agent ready) and
//! the whole `vm run --rm -- true` as the CLI sees it. Prints p50, min and
//! max per kernel, and the machine load before and after.

use std::time::Instant;

const ROUNDS: usize = 11;

fn p50(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

fn summary(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("p50 {:7.0} ms  (min {min:.0}, max {max:.0})", p50(v))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Kernel {
    label: &'static str,
    name: String,
    boot: Vec<f64>,
    run: Vec<f64>,
}

fn main() {
    let Some(built) = banger_testkit::fixture(
        "BANGER_TEST_BUILT_KERNEL",
        "set it to the directory scripts/build-kernel.sh prints",
    ) else {
        return;
    };
    let home = banger_testkit::boot_home().expect("BANGER_TEST_KERNEL_DEB and BANGER_AGENT_BIN");
    let debian = home.json(&["kernel", "ls", "--json"])[0]["name"]
        .as_str()
        .expect("kernel name")
        .to_string();
    home.ok(&[
        "kernel",
        "import",
        built.join("bzImage").to_str().expect("utf-8 path"),
        "--name",
        "banger-built",
    ]);
    let mut kernels = [
        Kernel {
            label: "debian-cloud",
            name: debian,
            boot: vec![],
            run: vec![],
        },
        Kernel {
            label: "banger-built",
            name: "banger-built".into(),
            boot: vec![],
            run: vec![],
        },
    ];
    let load_before = loadavg();

    // Warm-up: builds each kernel's initramfs, fills the page cache.
    for k in &kernels {
        home.ok(&[
            "vm", "run", "busybox", "--rm", "--kernel", &k.name, "--memory", "256M", "--", "true",
        ]);
    }

    for round in 0..ROUNDS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let k = &mut kernels[i];
            let name = format!("{}-{round}", k.label);
            home.ok(&[
                "vm", "create", "busybox", "--name", &name, "--kernel", &k.name, "--memory", "256M",
            ]);
            let report = home.json(&["vm", "start", &name, "--json"]);
            k.boot.push(
                report["timings"]["boot_ms"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("boot_ms in {report}")),
            );
            home.ok(&["vm", "rm", "--force", &name]);

            let t = Instant::now();
            home.ok(&[
                "vm", "run", "busybox", "--rm", "--kernel", &k.name, "--memory", "256M", "--",
                "true",
            ]);
            k.run.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    println!(
        "boot to agent under QEMU ({ROUNDS} rounds, alternating; loadavg before {load_before}, after {})",
        loadavg()
    );
    for k in &kernels {
        println!("{:>13} boot_ms     {}", k.label, summary(&k.boot));
        println!("{:>13} vm run true {}", k.label, summary(&k.run));
    }
}
