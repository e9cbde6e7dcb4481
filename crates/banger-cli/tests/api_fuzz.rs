//! Fuzz the live daemon's API with schemathesis, from the OpenAPI document
//! it serves: a real daemon in a private home with a kernel, an image and a
//! VM, reached through a loopback TCP relay to its Unix socket. Checks: no
//! 5xx, every response in its documented schema, status and content type;
//! the daemon still answers afterwards; and no request the daemon rejected
//! changed its state (`scripts/schemathesis_hooks.py` compares the listings
//! and the data dir's files around each one).
//!
//! Routes that boot a VM (start, restart), stop the daemon, or import from
//! paths and registries the fuzzer would invent (image import of `/`, a pull
//! from the internet) are left out. The guest routes (ports, stats, files
//! in and out, tcp) are fuzzed against the stopped VM: what they can reach
//! without a running guest is their validation and their refusal (409),
//! which is what a fuzzer can judge. exec is left out: its query is only
//! read after the upgrade, so every request is the same refusal.
//!
//! `BANGER_SCHEMATHESIS` is the schemathesis executable (scripts/test.sh
//! installs it with scripts/schemathesis.sh); `BANGER_FUZZ_EXAMPLES` the
//! number of cases per operation (default 25).

use std::path::Path;
use std::process::Command;

use banger_testkit::http::TcpRelay;
use banger_testkit::{TestHome, fake_bzimage, fixture, tiny_rootfs};

/// Operations the fuzzer must not call (see the module doc).
const EXCLUDED: [&str; 7] = [
    // Stops the daemon under test.
    "stop",
    // Boot a VM (minutes under TCG per case), then leave it running.
    "vms_start",
    "vms_restart",
    // Upgrades the connection; without the upgrade headers it is one fixed
    // refusal, with them a session schemathesis cannot speak.
    "vms_exec",
    // Import from host paths and registries the fuzzer would invent.
    "images_import",
    "images_pull",
    // Downloads a real kernel package from the host's Debian mirror.
    "kernels_pull",
];

#[test]
fn schemathesis_finds_no_failure() {
    let Some(st) = fixture(
        "BANGER_SCHEMATHESIS",
        "run scripts/test.sh, or set it to the output of scripts/schemathesis.sh",
    ) else {
        return;
    };
    let examples = std::env::var("BANGER_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());

    let home = TestHome::new();
    let work = tempfile::tempdir().unwrap();
    let kernel = work.path().join("bzImage");
    fake_bzimage(&kernel, "6.1.0-fuzz");
    home.ok(&["kernel", "import", kernel.to_str().unwrap(), "--name", "k"]);
    let rootfs = work.path().join("rootfs");
    tiny_rootfs(&rootfs);
    home.ok(&[
        "image",
        "import",
        rootfs.to_str().unwrap(),
        "--name",
        "tiny",
    ]);
    home.ok(&[
        "vm",
        "create",
        "tiny",
        "--name",
        "target",
        "--work-disk-size",
        "64M",
        "--overlay-disk-size",
        "64M",
    ]);
    let pid = home.json(&["daemon", "status", "--json"])["pid"].clone();

    let relay = TcpRelay::start(home.socket());
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/schemathesis_hooks.py");
    let log = work.path().join("requests.ndjson");
    let report = work.path().join("report");
    // Half the references name the objects made above (or prefixes of
    // them), so removals, defaults and changes meet real objects and their
    // refusals (a kernel in use, a running VM) are exercised too.
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[dictionaries.refs]\nvalues = [\"k\", \"tiny\", \"target\", \"t\", \"ti\"]\n\n\
         [parameters]\n\"path.reference\" = { dictionary = \"refs\", probability = 0.5 }\n",
    )
    .unwrap();
    let mut cmd = Command::new(&st);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", relay.url()))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,\
             content_type_conformance",
            "--max-examples",
            &examples,
            "--workers",
            "1",
            "--request-timeout",
            "120",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&report);
    for op in EXCLUDED {
        cmd.args(["--exclude-operation-id", op]);
    }
    let out = cmd
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("BANGER_FUZZ_BASE", relay.url())
        .env("BANGER_FUZZ_DATA_DIR", home.data_dir())
        .env("BANGER_FUZZ_LOG", &log)
        // No telemetry, no home of the caller's.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("HOME", work.path())
        .current_dir(work.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a hook record"))
        .collect();
    let violations: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r.get("violation").is_some())
        .collect();
    let server_errors = records
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s >= 500))
        .count();
    let rejected = records
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s >= 400))
        .count();
    // The figures RELIABILITY.md records.
    eprintln!(
        "schemathesis: {} requests ({rejected} rejected, {server_errors} 5xx), {} state changes \
         by rejected requests, exit {}",
        records.len(),
        violations.len(),
        out.status
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    assert!(
        records.len() > 100,
        "too few requests reached the daemon: {}\n{stdout}",
        records.len()
    );
    assert!(
        violations.is_empty(),
        "rejected requests changed state: {violations:#?}"
    );
    // Still the same daemon, still answering.
    assert_eq!(home.json(&["daemon", "status", "--json"])["pid"], pid);
    home.ok(&["vm", "ls"]);
}
