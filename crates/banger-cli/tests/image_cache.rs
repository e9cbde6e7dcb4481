//! The blob cache as the CLI sees it: `image ls` and `image show` name
//! what was pulled, `image rm` frees the blobs no other image shares,
//! `image prune` frees the rest, and a pull cut short by a killed daemon
//! leaves no image behind and resumes from the blobs it had verified.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_testkit::TestHome;
use banger_testkit::registry::{
    Comp, Image, Registry, SlowProxy, TarBuilder, Written, layer, single_image_layout,
};

/// Bytes that no compressor shrinks, from a fixed seed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}

fn base_layer() -> (Vec<u8>, &'static str) {
    let mut t = TarBuilder::default();
    t.dir("etc").file("etc/os-release", b"ID=shared\n");
    layer(&t.finish(), Comp::Gzip)
}

fn image_with(top_name: &str, top: &[u8]) -> Image {
    let mut t = TarBuilder::default();
    t.dir("srv").file(&format!("srv/{top_name}"), top);
    Image {
        arch: "amd64",
        variant: None,
        layers: vec![base_layer(), layer(&t.finish(), Comp::Gzip)],
        cmd: vec!["cat", "/etc/os-release"],
        user: "",
    }
}

fn push(registry: &Registry, name: &str, img: &Image) -> Written {
    let dir = tempfile::tempdir().unwrap();
    let written = single_image_layout(dir.path(), "1", img);
    registry.push(dir.path(), "1", &format!("{name}:1"), None, false);
    written
}

/// The digests of the blobs in the home's cache.
fn cached(home: &TestHome) -> BTreeSet<String> {
    std::fs::read_dir(home.data_dir().join("blobs/sha256"))
        .map(|entries| {
            entries
                .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rm_frees_unshared_blobs_and_prune_frees_the_rest() {
    let registry = Registry::start();
    let one = push(&registry, "app/one", &image_with("one", b"first\n"));
    let two = push(&registry, "app/two", &image_with("two", b"second\n"));
    assert_eq!(one.layers[0], two.layers[0], "the base layer is shared");

    let home = TestHome::new();
    home.ok(&["image", "pull", &format!("{}/app/one:1", registry.addr)]);
    home.ok(&["image", "pull", &format!("{}/app/two:1", registry.addr)]);
    assert_eq!(
        cached(&home),
        set(&[
            &one.config,
            &one.layers[0],
            &one.layers[1],
            &two.config,
            &two.layers[1]
        ])
    );

    // ls and show name the source and the manifest digest; show the config.
    let ls = home.ok(&["image", "ls"]);
    let header = ls.lines().next().unwrap();
    for column in ["NAME", "DIGEST", "SIZE", "SOURCE"] {
        assert!(header.contains(column), "{ls}");
    }
    let short = &one.manifest["sha256:".len()..][..12];
    assert!(
        ls.lines()
            .any(|l| l.starts_with("one:1") && l.contains(short) && l.contains("/app/one:1")),
        "{ls}"
    );
    let show = home.ok(&["image", "show", "one:1"]);
    assert!(show.contains(&one.manifest), "{show}");
    assert!(show.contains("cat /etc/os-release"), "{show}");

    // Removing one image frees what only it used; the shared base stays.
    home.ok(&["image", "rm", "one:1"]);
    assert_eq!(
        cached(&home),
        set(&[&two.config, &two.layers[0], &two.layers[1]])
    );

    // A leftover no image names (as a failed pull leaves) goes with prune.
    let stray = noise(4096, 7);
    let stray_digest = banger_testkit::registry::sha256(&stray);
    let hex = &stray_digest["sha256:".len()..];
    std::fs::write(home.data_dir().join("blobs/sha256").join(hex), &stray).unwrap();
    let report = home.json(&["image", "prune", "--json"]);
    assert_eq!(report["blobs_removed"], 1, "{report}");
    assert_eq!(report["bytes_freed"], 4096, "{report}");
    assert_eq!(
        cached(&home),
        set(&[&two.config, &two.layers[0], &two.layers[1]])
    );
    assert_eq!(
        home.ok(&["image", "prune"]).trim(),
        "removed 0 blobs, freed 0B"
    );

    home.ok(&["image", "rm", "two:1"]);
    assert!(cached(&home).is_empty(), "{:?}", cached(&home));
}

#[test]
fn pull_cut_short_by_a_killed_daemon_resumes_from_verified_blobs() {
    let registry = Registry::start();
    // A small layer that arrives at once and a big one that takes seconds
    // through the slow relay.
    let small = {
        let mut t = TarBuilder::default();
        t.dir("etc").file("etc/small", b"small\n");
        layer(&t.finish(), Comp::Gzip)
    };
    let big = {
        let mut t = TarBuilder::default();
        t.dir("srv").file("srv/big", &noise(6 << 20, 42));
        layer(&t.finish(), Comp::None)
    };
    let img = Image {
        arch: "amd64",
        variant: None,
        layers: vec![small, big],
        cmd: vec!["true"],
        user: "",
    };
    let written = push(&registry, "slow/app", &img);
    let proxy = SlowProxy::start(&registry.addr, 1 << 20);

    let home = TestHome::new();
    let pull = home
        .banger_std()
        .args(["image", "pull", &format!("{}/slow/app:1", proxy.addr)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cached(&home).contains(&written.layers[0]) {
        assert!(Instant::now() < deadline, "the small layer never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !cached(&home).contains(&written.layers[1]),
        "the big layer must still be downloading"
    );
    home.kill_daemon();
    let out = pull.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the pull must fail: {err}");
    // Progress lines come first; the error is the last line, and one line.
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("banger: ") && last.contains("bangerd"),
        "{err}"
    );

    // Nothing half-made: no image, and nothing of the pull left in tmp/.
    assert_eq!(home.json(&["image", "ls", "--json"]), serde_json::json!([]));
    let tmp: Vec<_> = std::fs::read_dir(home.data_dir().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{tmp:?}");

    // The registry loses the small layer: the pull can only succeed by
    // using the copy the first pull verified.
    std::fs::remove_file(registry.blob_data(&written.layers[0])).unwrap();
    home.ok(&[
        "image",
        "pull",
        &format!("{}/slow/app:1", registry.addr),
        "--name",
        "app",
    ]);
    let img = home.json(&["image", "show", "app", "--json"]);
    assert_eq!(img["source"]["digest"], written.manifest.as_str());
}
