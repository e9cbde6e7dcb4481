//! Benchmark: `banger image pull` of a Debian bookworm image (one gzip
//! layer, ~250 MB unpacked) from a registry on loopback, against the
//! pipeline a user would otherwise run: `skopeo copy` into an OCI layout,
//! `umoci unpack`, then `mkfs.ext4 -d` of the unpacked root.
//!
//! Run: `cargo build --release --workspace && BANGER_TEST_DEBIAN_TAR=$(scripts/fetch-debian-rootfs.sh $PWD/.cache) cargo bench -p banger-cli --bench image_pull`
//!
//! Cold: no blob in banger's cache, an empty OCI layout for skopeo. Warm:
//! the blobs are there (banger pulls the same ref under a new name; skopeo
//! copies into the layout that has them). Both sides build an ext4 of the
//! same size with the same block size, run alternately, after a `sync`, so
//! neither pays for the other's writeback. Goal: banger at least 2x faster,
//! cold and warm.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use banger_testkit::registry::Registry;
use banger_testkit::{TestHome, debian_rootfs_tar, require_tool};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sync() {
    run(&mut Command::new("sync"));
}

/// skopeo copy + umoci unpack + mkfs.ext4 -d into `work`, whose `oci`
/// layout may already hold the blobs.
fn baseline(reference: &str, work: &Path, size: u64, rootless: bool) -> Duration {
    let bundle = work.join("bundle");
    let image = work.join("rootfs.ext4");
    let layout = format!("{}:bookworm", work.join("oci").display());
    let t = Instant::now();
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{layout}"),
    ]));
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if rootless {
        umoci.arg("--rootless");
    }
    run(umoci.args(["--image", &layout]).arg(&bundle));
    std::fs::File::create(&image)
        .unwrap()
        .set_len(size)
        .unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(bundle.join("rootfs"))
        .arg(&image));
    let d = t.elapsed();
    std::fs::remove_dir_all(&bundle).unwrap();
    std::fs::remove_file(&image).unwrap();
    d
}

fn pull(home: &TestHome, reference: &str, name: &str) -> Duration {
    let t = Instant::now();
    home.ok(&["image", "pull", reference, "--name", name]);
    t.elapsed()
}

fn main() {
    let Some(tarball) = debian_rootfs_tar() else {
        println!("image_pull: skipped, no Debian rootfs tarball (BANGER_TEST_DEBIAN_TAR)");
        return;
    };
    require_tool("umoci", "umoci");
    let registry = Registry::start();
    let reference = format!("{}/library/debian:bookworm", registry.addr);
    // One gzip layer, as an image builder would push it.
    registry.push_rootfs_tarball(&tarball, "library/debian:bookworm");
    let rootless = !nix::unistd::Uid::effective().is_root();

    let home = TestHome::new();
    // Start the daemon and size the baseline's ext4 like banger's.
    home.ok(&["image", "pull", &reference, "--name", "probe"]);
    let size = home.json(&["image", "show", "probe", "--json"])["size_bytes"]
        .as_u64()
        .unwrap();
    home.ok(&["image", "rm", "probe"]);

    let (mut cold, mut warm, mut base_cold, mut base_warm) = (vec![], vec![], vec![], vec![]);
    for i in 0..RUNS {
        let work = home.path().join(format!("baseline-{i}"));
        std::fs::create_dir(&work).unwrap();

        home.ok(&["image", "prune"]);
        sync();
        cold.push(pull(&home, &reference, "cold"));
        sync();
        base_cold.push(baseline(&reference, &work, size, rootless));
        sync();
        warm.push(pull(&home, &reference, "warm"));
        sync();
        base_warm.push(baseline(&reference, &work, size, rootless));

        home.ok(&["image", "rm", "cold", "warm"]);
        std::fs::remove_dir_all(&work).unwrap();
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "image pull of Debian bookworm ({} unpacked, {RUNS} alternating runs, medians)",
        banger_api::size::human(size)
    );
    for (label, ours, theirs) in [
        ("cold cache", &cold, &base_cold),
        ("warm cache", &warm, &base_warm),
    ] {
        let (a, b) = (median(ours.clone()), median(theirs.clone()));
        println!(
            "{label}: banger image pull {:>7.0} ms   skopeo+umoci{}+mkfs {:>7.0} ms   {:.2}x faster",
            ms(a),
            if rootless { " --rootless" } else { "" },
            ms(b),
            b.as_secs_f64() / a.as_secs_f64()
        );
        let all = |v: &Vec<Duration>| {
            v.iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  runs (ms): banger [{}]  baseline [{}]",
            all(ours),
            all(theirs)
        );
    }
}
