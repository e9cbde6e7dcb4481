//! Bad input everywhere: every command that takes user input, driven with
//! generated bad names, sizes, counts, references, paths and options. Each
//! must fail with one line (`banger: ...`, the last line of stderr), a
//! non-zero exit, nothing on stdout, and no change of state: the store (as
//! `vm ls`, `image ls`, `kernel ls` show it) and the files of the data dir
//! (paths and sizes) are the same before and after.
//!
//! One daemon per test function (a home with a kernel, an image and a
//! stopped VM `box`), a modest number of cases per property so the file
//! runs in a minute or two. Nothing here boots a VM: every case must be
//! refused before anything is built, and a case that is not would show up
//! as a change of state.

use std::path::Path;

use banger_testkit::{TestHome, fake_bzimage, require_tool, tiny_rootfs};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property; `PROPTEST_CASES` raises it for a longer soak.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A home with one kernel (`k1`), one image (`tiny`) and one stopped VM
/// (`box`), and the paths the cases need.
struct Fixture {
    home: TestHome,
    kernel: String,
    rootfs: String,
}

fn fixture() -> Fixture {
    require_tool("mkfs.ext4", "e2fsprogs");
    require_tool("debugfs", "e2fsprogs");
    require_tool("fakeroot", "fakeroot");
    let home = TestHome::new();
    let k = home.path().join("vmlinuz");
    fake_bzimage(&k, "6.1.0-test");
    home.ok(&["kernel", "import", k.to_str().unwrap(), "--name", "k1"]);
    let root = home.path().join("rootfs");
    tiny_rootfs(&root);
    home.ok(&["image", "import", root.to_str().unwrap(), "--name", "tiny"]);
    home.ok(&[
        "vm",
        "create",
        "tiny",
        "--name",
        "box",
        "--work-disk-size",
        "1G",
    ]);
    std::fs::create_dir_all(home.path().join("a-dir")).unwrap();
    std::fs::write(home.path().join("junk.bin"), vec![0x5au8; 8192]).unwrap();
    std::fs::write(home.path().join("empty"), b"").unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(home.path().join("fifo"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    Fixture {
        kernel: k.display().to_string(),
        rootfs: root.display().to_string(),
        home,
    }
}

/// What must not change: the three listings and every file of the data
/// dir with its size. The daemon's log and SQLite's WAL and shared-memory
/// files change on reads and are left out, as are the sockets and lock.
#[derive(Debug, PartialEq)]
struct State {
    vms: serde_json::Value,
    images: serde_json::Value,
    kernels: serde_json::Value,
    files: Vec<(String, u64)>,
}

fn state(home: &TestHome) -> State {
    let mut files = Vec::new();
    walk(&home.data_dir(), &home.data_dir(), &mut files);
    files.retain(|(p, _)| {
        !(p == "bangerd.log"
            || p.ends_with("-wal")
            || p.ends_with("-shm")
            || p.starts_with("run/")
            || p.ends_with(".sock")
            || p.ends_with(".lock")
            // A finished import's unpacked tree, removed in the background.
            || p.contains(".staging-"))
    });
    files.sort();
    State {
        vms: home.json(&["vm", "ls", "--json"]),
        images: home.json(&["image", "ls", "--json"]),
        kernels: home.json(&["kernel", "ls", "--json"]),
        files,
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_dir() {
            out.push((format!("{rel}/"), 0));
            walk(root, &p, out);
        } else {
            out.push((rel, meta.len()));
        }
    }
}

/// Run `banger ARGS` and check it is refused as bad input must be;
/// returns the error line.
fn refused(home: &TestHome, args: &[String]) -> Result<String, TestCaseError> {
    let before = state(home);
    let out = home
        .banger()
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .map_err(|e| TestCaseError::fail(format!("cannot run banger: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    prop_assert!(!out.status.success(), "banger {args:?} succeeded: {stdout}");
    prop_assert!(
        out.status.code().is_some(),
        "banger {args:?} died of a signal: {stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("banger: "))
        .collect();
    prop_assert_eq!(
        errors.len(),
        1,
        "banger {:?}: expected one error line: {}",
        args,
        stderr
    );
    let last = stderr.trim_end().lines().last().unwrap_or("");
    prop_assert_eq!(
        last,
        errors[0],
        "banger {:?}: the error is not the last line: {}",
        args,
        stderr
    );
    // The error names the problem with the input, not the plumbing.
    prop_assert!(
        !errors[0].contains("no such route") && !errors[0].contains("bangerd answered"),
        "banger {args:?}: unclear error: {stderr}"
    );
    prop_assert!(
        stdout.is_empty(),
        "banger {args:?} printed on stdout: {stdout}"
    );
    let after = state(home);
    prop_assert!(
        before == after,
        "banger {args:?} changed state: {}",
        changes(&before, &after)
    );
    Ok(errors[0].to_string())
}

/// What differs between two states, short enough to read in a failure.
fn changes(before: &State, after: &State) -> String {
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("{}({})", r["name"], r["desired_state"]))
            .collect()
    };
    let mut out = Vec::new();
    for (what, b, a) in [
        ("vms", &before.vms, &after.vms),
        ("images", &before.images, &after.images),
        ("kernels", &before.kernels, &after.kernels),
    ] {
        if b != a {
            out.push(format!("{what} {:?} -> {:?}", names(b), names(a)));
        }
    }
    for f in &after.files {
        if !before.files.contains(f) {
            out.push(format!("+{}:{}", f.0, f.1));
        }
    }
    for f in &before.files {
        if !after.files.contains(f) {
            out.push(format!("-{}:{}", f.0, f.1));
        }
    }
    out.join(", ")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---- generators ------------------------------------------------------

/// Names no VM may have: too long, uppercase, leading dash, trailing dash,
/// dots, slashes, underscores, unicode, whitespace, control bytes, empty.
fn bad_vm_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{64,90}",
        "[a-z0-9]{0,4}[A-Z][a-zA-Z0-9]{0,4}",
        "-[a-z0-9-]{0,8}",
        "[a-z][a-z0-9]{0,6}-",
        "[a-z]{0,4}[./_:][a-z./]{0,4}",
        "\\.\\./[a-z]{1,6}",
        "[a-z]{0,3}[à-ÿ一-龥🙂][a-z]{0,3}",
        "[a-z]{0,3}[ \t\n\r\x01\x7f][a-z]{0,3}",
        Just(String::new()),
    ]
}

/// Names no image or kernel may have (they allow `.`, `_`, `:`).
fn bad_artifact_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{64,90}",
        "[a-z0-9]{0,4}[A-Z][a-zA-Z0-9]{0,4}",
        "-[a-z0-9-]{0,8}",
        "[._:][a-z0-9]{0,6}",
        "[a-z]{0,4}/[a-z/]{0,4}",
        "\\.\\./[a-z]{1,6}",
        "[a-z]{0,3}[à-ÿ一-龥🙂][a-z]{0,3}",
        "[a-z]{0,3}[ \t\n\x01\x7f][a-z]{0,3}",
        Just(String::new()),
    ]
}

/// Disk sizes that must be refused: negative, zero, overflowing, bad units,
/// too small, too large, not whole MiB, empty.
fn bad_disk_size() -> impl Strategy<Value = String> {
    prop_oneof![
        "-[0-9]{1,5}[KMG]?",
        prop_oneof![Just("0"), Just("0M"), Just("0G"), Just("0B")].prop_map(String::from),
        "[1-9][0-9]{20,24}",
        "[1-9][0-9]{6,9}[TPE]",
        "[1-9][0-9]{0,3}(X|gig|Q|GG|P|kk|G1|G-)",
        "[1-9][0-9]{0,2}\\.[0-9]G",
        "[1-9]M|[1-5][0-9]M|6[0-3]M",
        "[3-9]T|[1-9][0-9]{1,2}T",
        "[1-9][0-9]{7,8}[1-9]",
        "[a-zA-Z]{1,6}",
        Just(String::new()),
    ]
}

/// Memory that must be refused (a bare number is MiB).
fn bad_memory() -> impl Strategy<Value = String> {
    prop_oneof![
        "-[0-9]{1,5}[MG]?",
        prop_oneof![Just("0"), Just("0M"), Just("0G")].prop_map(String::from),
        "[1-9][0-9]{20,24}",
        "[1-9][0-9]{0,3}(X|gig|Q|GG|P|kk|G1)",
        "[1-9][0-9]?|1[01][0-9]|12[0-7]",
        "[1-9][0-9]{0,2}[0-9]K",
        "[2-9]T|[1-9][0-9]{1,3}T",
        "1048577|[2-9][0-9]{6}",
        "[a-zA-Z]{1,6}",
        Just(String::new()),
    ]
}

/// vCPU counts that must be refused: zero, too many, negative, overflow,
/// not a number.
fn bad_cpus() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        (65u64..100_000).prop_map(|n| n.to_string()),
        Just("1000".to_string()),
        "-[0-9]{1,4}",
        (u64::from(u32::MAX) + 1..u64::MAX).prop_map(|n| n.to_string()),
        "[a-z]{1,5}|[0-9]\\.[0-9]|0x[0-9]{1,2}",
        Just(String::new()),
    ]
}

/// References that name nothing: unknown names, path tricks, query tricks,
/// unicode, huge, empty. None is a prefix of `box`, `tiny` or `k1`.
fn bad_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        "zz[a-z0-9]{0,10}",
        "\\.\\./[a-z]{0,6}",
        "\\.\\.",
        "\\.",
        "/|//|/v1/vms|\\?force=true|#x|%2e%2e|%00",
        "zz[a-z]{0,3}[/?#%&=+ ][a-z]{0,3}",
        "[à-ÿ一-龥🙂]{1,4}",
        "z{300,2000}",
        Just(String::new()),
    ]
}

/// Registry references no parser may accept, so no case reaches the
/// network: uppercase repositories, empty parts, bad tags and digests.
fn bad_pull_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,3}[A-Z][a-zA-Z]{0,3}",
        "[a-z]{1,5}:",
        "[a-z]{1,5}::[a-z]{1,3}",
        ":[a-z]{1,5}",
        "[a-z]{1,5}@sha256:[0-9a-f]{1,20}",
        "[a-z]{1,5}@[a-z]{1,6}",
        "[a-z]{1,5}:[a-z]{129,140}",
        "[a-z]{1,4}/",
        "[a-z]{1,4}//[a-z]{1,4}",
        "-[a-z]{1,5}",
        "[a-z]{1,3} [a-z]{1,3}",
        "[a-z]{0,3}[à-ÿ🙂][a-z]{0,3}",
        Just(String::new()),
    ]
}

// ---- properties ------------------------------------------------------

#[test]
fn bad_names_are_refused() {
    let f = fixture();
    let home = &f.home;
    let cases = (0usize..6, bad_vm_name(), bad_artifact_name());
    runner()
        .run(&cases, |(which, vm_name, artifact)| {
            let args = match which {
                0 => s(&["vm", "create", "tiny", &format!("--name={vm_name}")]),
                1 => s(&[
                    "vm",
                    "run",
                    "tiny",
                    &format!("--name={vm_name}"),
                    "--",
                    "true",
                ]),
                2 => s(&["image", "import", &f.rootfs, &format!("--name={artifact}")]),
                3 => s(&["kernel", "import", &f.kernel, &format!("--name={artifact}")]),
                // After `--`, so a name like `-x` is a name, not a flag.
                4 => s(&["image", "commit", "box", "--", &artifact]),
                // A loopback registry on a closed port: the name must be
                // refused before anything is fetched.
                _ => s(&[
                    "image",
                    "pull",
                    "127.0.0.1:9/x:y",
                    &format!("--name={artifact}"),
                ]),
            };
            let err = refused(home, &args)?;
            prop_assert!(err.contains("name"), "{args:?}: {err}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn bad_sizes_and_counts_are_refused() {
    let f = fixture();
    let home = &f.home;
    let cases = (0usize..11, bad_disk_size(), bad_memory(), bad_cpus());
    runner()
        .run(&cases, |(which, disk, mem, cpus)| {
            let disk_flag = format!("--work-disk-size={disk}");
            let overlay_flag = format!("--overlay-disk-size={disk}");
            let mem_flag = format!("--memory={mem}");
            let cpus_flag = format!("--cpus={cpus}");
            let args = match which {
                0 => s(&["vm", "create", "tiny", &disk_flag]),
                1 => s(&["vm", "create", "tiny", &overlay_flag]),
                2 => s(&["vm", "create", "tiny", &mem_flag]),
                3 => s(&["vm", "create", "tiny", &cpus_flag]),
                4 => s(&["vm", "set", "box", &disk_flag]),
                5 => s(&["vm", "set", "box", &mem_flag]),
                6 => s(&["vm", "set", "box", &cpus_flag]),
                7 => s(&["vm", "run", "tiny", &disk_flag, "--", "true"]),
                8 => s(&["vm", "run", "tiny", &mem_flag, "--", "true"]),
                9 => s(&["vm", "run", "tiny", &cpus_flag, "--", "true"]),
                _ => s(&["vm", "set", "box", &cpus_flag, &mem_flag]),
            };
            refused(home, &args)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn bad_refs_are_refused() {
    let f = fixture();
    let home = &f.home;
    let cases = (0usize..24, bad_ref(), bad_pull_ref());
    runner()
        .run(&cases, |(which, r, pull)| {
            let r = r.as_str();
            let args = match which {
                0 => s(&["vm", "show", r]),
                1 => s(&["vm", "start", r]),
                2 => s(&["vm", "stop", r]),
                3 => s(&["vm", "restart", r]),
                4 => s(&["vm", "kill", r]),
                5 => s(&["vm", "logs", r]),
                6 => s(&["vm", "rm", r]),
                7 => s(&["vm", "rm", "--force", r]),
                8 => s(&["vm", "set", r, "--cpus", "2"]),
                9 => s(&["vm", "exec", r, "--", "true"]),
                10 => s(&["vm", "create", r]),
                11 => s(&["vm", "create", "tiny", "--kernel", r]),
                12 => s(&["vm", "run", r, "--", "true"]),
                13 => s(&["image", "show", r]),
                14 => s(&["image", "rm", r]),
                15 => s(&["kernel", "show", r]),
                16 => s(&["kernel", "rm", r]),
                17 => s(&["kernel", "default", r]),
                18 => s(&["vm", "pause", r]),
                19 => s(&["vm", "resume", r]),
                20 => s(&["vm", "rebase", r, "tiny"]),
                21 => s(&["vm", "rebase", "box", r]),
                22 => s(&["image", "commit", r, "fresh"]),
                _ => s(&["image", "pull", &pull]),
            };
            let err = refused(home, &args)?;
            prop_assert!(
                !err.contains("connect") && !err.contains("resolve"),
                "{args:?} reached for the network: {err}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn bad_paths_are_refused() {
    let f = fixture();
    let home = &f.home;
    let dir = home.path().display().to_string();
    let bad_path = prop_oneof![
        "[a-z]{1,8}".prop_map(move |n| format!("/nonexistent/{n}")),
        "[a-z]{1,8}".prop_map({
            let dir = dir.clone();
            move |n| format!("{dir}/missing-{n}")
        }),
        // `..` that climbs out of the home and names nothing.
        (1usize..12, "[a-z]{1,6}").prop_map({
            let dir = dir.clone();
            move |(n, tail)| format!("{dir}/a-dir/{}nonexistent-{tail}", "../".repeat(n))
        }),
        // A relative path, made absolute against the CLI's cwd.
        (1usize..6, "[a-z]{1,6}").prop_map(|(n, t)| format!("{}no-{t}", "../".repeat(n))),
        Just(format!("{dir}/a-dir")),
        Just(format!("{dir}/junk.bin")),
        Just(format!("{dir}/empty")),
        Just("/dev/null".to_string()),
        // Reading these would block (a FIFO with no writer) or never end.
        Just(format!("{dir}/fifo")),
        Just("/dev/zero".to_string()),
        Just(String::new()),
    ];
    let cases = (0usize..6, bad_path);
    runner()
        .run(&cases, |(which, p)| {
            let p = p.as_str();
            let is_dir = p.ends_with("/a-dir");
            let args = match which {
                // A directory is a valid root filesystem: use it only where
                // a file is wanted.
                0 if is_dir => s(&["kernel", "import", p]),
                0 => s(&["image", "import", p, "--name", "bad-path"]),
                1 => s(&["kernel", "import", p]),
                2 => s(&["kernel", "import", p, "--deb"]),
                3 => s(&["kernel", "import", &f.kernel, "--initrd", p]),
                4 => s(&["kernel", "import", p, "--name", "bad-path"]),
                _ if is_dir => s(&["kernel", "import", p, "--deb"]),
                _ => s(&["image", "import", p, "--name=other-path"]),
            };
            refused(home, &args)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn bad_options_are_refused() {
    let f = fixture();
    let home = &f.home;
    let bad_env = prop_oneof!["[A-Z]{1,8}", "=[a-z]{0,5}", Just(String::new())];
    let bad_timeout = prop_oneof![
        "-[0-9]{1,4}",
        "[a-z]{1,4}",
        "1[0-9]{20}",
        "[0-9]\\.[0-9]",
        Just(String::new()),
    ];
    let bad_platform = prop_oneof![
        "[a-z]{1,8}",
        "linux/",
        "/amd64",
        "[a-z]{1,4}/[a-z]{1,4}/[a-z]{1,4}/[a-z]{1,4}",
        "linux/[A-Z]{1,5}",
        Just(String::new()),
    ];
    let unknown_flag = "--zz[a-z-]{0,10}";
    let cases = (0usize..12, bad_env, bad_timeout, bad_platform, unknown_flag);
    runner()
        .run(&cases, |(which, env, timeout, platform, flag)| {
            let env_flag = format!("--env={env}");
            let args = match which {
                0 => s(&["vm", "exec", "box", &env_flag, "--", "true"]),
                1 => s(&["vm", "run", "tiny", &env_flag, "--", "true"]),
                2 => s(&["vm", "stop", "box", &format!("--timeout={timeout}")]),
                3 => s(&["vm", "restart", "box", &format!("--timeout={timeout}")]),
                4 => s(&[
                    "image",
                    "pull",
                    "127.0.0.1:9/x:y",
                    &format!("--platform={platform}"),
                ]),
                5 => s(&["vm", "create", "tiny", &flag]),
                6 => s(&["image", "import", &f.rootfs, "--name", "x", &flag]),
                7 => s(&["kernel", "ls", &flag]),
                8 => s(&["vm", &flag]),
                9 => s(&["image", "pull", "127.0.0.1:9/x:y", "--username", "u"]),
                10 => s(&[
                    "kernel", "import", &f.kernel, "--deb", "--initrd", &f.kernel,
                ]),
                _ => s(&["vm", "rm"]),
            };
            refused(home, &args)?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn bad_port_specs_are_refused() {
    let f = fixture();
    let home = &f.home;
    let port = 1u32..=65535;
    let bad_spec = prop_oneof![
        port.clone().prop_map(|p| format!("0:{p}")),
        port.clone().prop_map(|p| format!("{p}:0/udp")),
        (65536u64..10_000_000_000_000, port.clone()).prop_map(|(b, p)| format!("{b}:{p}")),
        (port.clone(), 65536u64..u64::MAX).prop_map(|(p, b)| format!("{p}:{b}/tcp")),
        (0u16..1000, port.clone()).prop_map(|(a, p)| format!("{a}.1.2:{p}:{p}")),
        ("[a-z]{1,8}", port.clone()).prop_map(|(h, p)| format!("{h}:{p}:{p}")),
        port.clone().prop_map(|p| format!("[::1]:{p}:{p}")),
        port.clone().prop_map(|p| format!("224.0.0.1:{p}:{p}")),
        ("[a-z]{1,6}", port.clone()).prop_map(|(pr, p)| format!("{p}:{p}/{pr}x")),
        port.clone().prop_map(|p| format!("{p}")),
        port.clone().prop_map(|p| format!("{p}-{}:80", p + 1)),
        Just(String::new()),
    ];
    let cases = (0usize..6, bad_spec, port);
    runner()
        .run(&cases, |(which, spec, p)| {
            let p = p.to_string();
            let dup = format!("127.0.0.1:{p}:81");
            let valid = format!("{p}:80");
            let args = match which {
                0 => s(&["vm", "create", "tiny", "--name", "x", "-p", &spec]),
                1 => s(&["vm", "run", "tiny", "-p", &spec, "--", "true"]),
                // The same host port twice, on all addresses and on one.
                2 => s(&["vm", "create", "tiny", "-p", &valid, "-p", &dup]),
                3 => s(&["vm", "create", "tiny", "-p", &valid, "--network", "none"]),
                4 => s(&["vm", "create", "tiny", "--network", &spec]),
                // This home runs with network.mode = "none": no port can be published.
                _ => s(&["vm", "create", "tiny", "-p", &valid]),
            };
            let e = refused(home, &args)?;
            if which < 2 {
                prop_assert!(e.contains("port"), "{args:?}: {e}");
            }
            Ok(())
        })
        .unwrap();
}
