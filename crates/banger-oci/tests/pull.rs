//! Pulls from a real `docker-registry` on 127.0.0.1, fed by `skopeo copy`
//! from OCI layouts built here; layers become an ext4 through the real
//! `banger-rootfs` worker and are checked inside it with debugfs.

mod common;

use std::sync::Mutex;

use banger_disk::{FileKind, read_file, stat};
use banger_image::{ImageError, import_layers};
use banger_oci::{
    BlobCache, Credentials, OciError, PullEvent, PullOptions, PulledImage, pull, resolve,
};
use common::{Comp, Image, Registry, TarBuilder, TokenProxy, layer};

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Pull and collect the events.
fn pull_events(
    reference: &str,
    opts: &PullOptions,
    cache: &BlobCache,
) -> (Result<PulledImage, OciError>, Vec<PullEvent>) {
    let events = Mutex::new(Vec::new());
    let res = run(pull(reference, opts, cache, &|e| {
        events.lock().unwrap().push(e)
    }));
    (res, events.into_inner().unwrap())
}

fn downloaded(events: &[PullEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PullEvent::BlobDone { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect()
}

fn layers_of(img: &PulledImage) -> Vec<(std::path::PathBuf, banger_image::Compression)> {
    img.layers
        .iter()
        .map(|l| (l.path.clone(), l.compression))
        .collect()
}

/// Three layers: a base, one with a whiteout, an opaque dir and a
/// hardlink, and a zstd one with a device node.
fn rich_image() -> Image {
    let base = TarBuilder::default()
        .dir("etc/")
        .file("etc/os-release", b"ID=test\n")
        .file("etc/gone", b"remove me\n")
        .dir("opt/")
        .dir("opt/app/")
        .file("opt/app/old", b"old\n")
        .dir("root/")
        .file("root/.profile", b"profile\n")
        .dir("bin/")
        .file("bin/tool", b"#!/bin/sh\n")
        .finish();
    let middle = TarBuilder::default()
        .dir("etc/")
        .file("etc/.wh.gone", b"")
        .dir("opt/app/")
        .file("opt/app/.wh..wh..opq", b"")
        .file("opt/app/new", b"new\n")
        .hardlink("bin/tool-link", "bin/tool")
        .finish();
    let top = TarBuilder::default()
        .dir("dev/")
        .char_device("dev/null", 1, 3)
        .file("etc/motd", b"hello\n")
        .finish();
    Image {
        arch: "amd64",
        variant: None,
        layers: vec![
            layer(&base, Comp::Gzip),
            layer(&middle, Comp::None),
            layer(&top, Comp::Zstd),
        ],
        cmd: vec!["run"],
        user: "1000:1000",
    }
}

fn opts() -> PullOptions {
    PullOptions::default()
}

#[test]
fn pulls_multi_layer_image_into_ext4() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = common::single_image_layout(&layout, "v1", &rich_image());
    reg.push(&layout, "v1", "rich:v1", None, false);
    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();

    let reference = format!("{}/rich:v1", reg.addr);
    let started = std::time::Instant::now();
    let (res, events) = pull_events(&reference, &opts(), &cache);
    let cold = started.elapsed();
    let img = res.unwrap();
    assert_eq!(img.reference, format!("{}/rich:v1", reg.addr));
    assert_eq!(img.manifest_digest, written.manifest);
    assert_eq!(img.config_digest, written.config);
    assert_eq!(
        img.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>(),
        written.layers
    );
    assert_eq!(
        img.layers.iter().map(|l| l.compression).collect::<Vec<_>>(),
        [
            banger_image::Compression::Gzip,
            banger_image::Compression::None,
            banger_image::Compression::Zstd
        ]
    );
    assert_eq!(img.config.cmd, ["run"]);
    assert_eq!(img.config.entrypoint, ["/bin/entry"]);
    assert_eq!(img.config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(img.config.user.as_deref(), Some("1000:1000"));
    assert_eq!(img.config.env, ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
    assert_eq!(downloaded(&events).len(), 4, "config + 3 layers");
    let total: u64 = img.layers.iter().map(|l| l.size).sum();
    assert!(
        events.iter().any(
            |e| matches!(e, PullEvent::Progress { done, total: t } if done == t && *t > total)
        )
    );
    for l in &img.layers {
        assert_eq!(common::sha256(&std::fs::read(&l.path).unwrap()), l.digest);
    }
    // Nothing but verified blobs in the cache.
    let names: Vec<_> = std::fs::read_dir(cache.root().join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");

    // A second pull of the unchanged ref downloads nothing.
    let started = std::time::Instant::now();
    let (again, events) = pull_events(&reference, &opts(), &cache);
    let warm = started.elapsed();
    assert_eq!(again.unwrap(), img);
    assert!(downloaded(&events).is_empty(), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, PullEvent::BlobProgress { .. }))
    );
    let resolved = run(resolve(&reference, &opts())).unwrap();
    assert_eq!(resolved.manifest_digest, img.manifest_digest);
    eprintln!("pull of a 3-layer image: cold {cold:?}, warm {warm:?}");

    let dest = tmp.path().join("images/rich");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let built = import_layers(&layers_of(&img), &dest, &common::worker(), &mut |_| {}).unwrap();
    let base = &built.base_path;
    assert_eq!(read_file(base, "/etc/os-release").unwrap(), b"ID=test\n");
    assert_eq!(read_file(base, "/etc/motd").unwrap(), b"hello\n");
    assert!(stat(base, "/etc/gone").is_err(), "whiteout ignored");
    assert!(stat(base, "/opt/app/old").is_err(), "opaque dir ignored");
    assert_eq!(read_file(base, "/opt/app/new").unwrap(), b"new\n");
    let tool = stat(base, "/bin/tool").unwrap();
    let link = stat(base, "/bin/tool-link").unwrap();
    assert_eq!((tool.inode, tool.links), (link.inode, 2));
    let null = stat(base, "/dev/null").unwrap();
    assert_eq!(
        (null.kind, null.device),
        (FileKind::CharDevice, Some((1, 3)))
    );
    assert_eq!(
        std::fs::read(built.work_seed_dir.join(".profile")).unwrap(),
        b"profile\n"
    );
}

#[test]
fn selects_platform_from_index() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let one = |arch, variant, text: &'static [u8]| Image {
        arch,
        variant,
        layers: vec![layer(
            &TarBuilder::default().file("arch", text).finish(),
            Comp::Gzip,
        )],
        cmd: vec![],
        user: "1000:1000",
    };
    let (index, written) = common::multi_platform_layout(
        &layout,
        "multi",
        &[
            one("arm64", Some("v8"), b"arm64\n"),
            one("amd64", None, b"amd64\n"),
        ],
    );
    reg.push(&layout, "multi", "multi:1", None, true);
    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();
    let reference = format!("{}/multi:1", reg.addr);

    let (amd, _) = pull_events(&reference, &opts(), &cache);
    let amd = amd.unwrap();
    assert_eq!(amd.manifest_digest, written[1].manifest);
    assert_eq!(amd.index_digest.as_deref(), Some(index.as_str()));
    let resolved = run(resolve(&reference, &opts())).unwrap();
    assert_eq!(resolved.manifest_digest, written[1].manifest);

    for platform in ["linux/arm64", "linux/arm64/v8", "linux/aarch64"] {
        let arm_opts = PullOptions {
            platform: platform.parse().unwrap(),
            ..opts()
        };
        let (arm, _) = pull_events(&reference, &arm_opts, &cache);
        let arm = arm.unwrap();
        assert_eq!(arm.manifest_digest, written[0].manifest, "{platform}");
        assert_eq!(
            std::fs::read(&arm.layers[0].path).unwrap(),
            std::fs::read(layout.join("blobs/sha256").join(&written[0].layers[0][7..])).unwrap()
        );
    }
    let none = PullOptions {
        platform: "linux/arm/v7".parse().unwrap(),
        ..opts()
    };
    let err = pull_events(&reference, &none, &cache).0.unwrap_err();
    assert!(matches!(err, OciError::NoMatchingPlatform { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("linux/arm64/v8") && msg.contains("linux/amd64"),
        "{msg}"
    );
}

/// Push a one-file image as `private:t` to a registry that wants `creds`;
/// returns its reference.
fn push_private(reg: &Registry, tmp: &std::path::Path, creds: (&str, &str), data: &[u8]) -> String {
    let layout = tmp.join("layout");
    let img = Image {
        arch: "amd64",
        variant: None,
        layers: vec![layer(
            &TarBuilder::default().file("f", data).finish(),
            Comp::Gzip,
        )],
        cmd: vec![],
        user: "1000:1000",
    };
    common::single_image_layout(&layout, "t", &img);
    reg.push(&layout, "t", "private:t", Some(creds), false);
    format!("{}/private:t", reg.addr)
}

#[test]
fn basic_auth_with_explicit_and_docker_config_credentials() {
    let creds = ("alice", "wonderland");
    let reg = Registry::start_with_auth(Some(creds));
    let tmp = tempfile::tempdir().unwrap();
    let reference = push_private(&reg, tmp.path(), creds, b"x");

    let cache = BlobCache::open(&tmp.path().join("anon")).unwrap();
    let err = pull_events(&reference, &opts(), &cache).0.unwrap_err();
    assert!(matches!(err, OciError::Auth { .. }), "{err}");
    let wrong = PullOptions {
        credentials: Credentials::Basic {
            username: "alice".into(),
            password: "nope".into(),
        },
        ..opts()
    };
    let err = pull_events(&reference, &wrong, &cache).0.unwrap_err();
    assert!(matches!(err, OciError::Auth { .. }), "{err}");

    let explicit = PullOptions {
        credentials: Credentials::Basic {
            username: creds.0.into(),
            password: creds.1.into(),
        },
        ..opts()
    };
    let cache = BlobCache::open(&tmp.path().join("explicit")).unwrap();
    pull_events(&reference, &explicit, &cache).0.unwrap();

    let config = tmp.path().join("docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let auth = common::base64_std(format!("{}:{}", creds.0, creds.1).as_bytes());
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"{auth}"}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let from_file = PullOptions {
        credentials: Credentials::docker_config(config),
        ..opts()
    };
    let cache = BlobCache::open(&tmp.path().join("config")).unwrap();
    let img = pull_events(&reference, &from_file, &cache).0.unwrap();
    assert_eq!(img.layers.len(), 1);
}

/// A directory holding `docker-credential-banger-test`, which answers
/// `user`/`password` for `server` only.
fn fake_cred_helper(dir: &std::path::Path, server: &str, user: &str, password: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("docker-credential-banger-test");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
[ "$1" = get ] || exit 2
read -r url
if [ "$url" = "{server}" ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}\n' "$url"
else
  echo 'credentials not found in native keychain'
  exit 1
fi
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn basic_auth_with_credentials_from_a_cred_helper() {
    let creds = ("carol", "from-the-helper");
    let reg = Registry::start_with_auth(Some(creds));
    let tmp = tempfile::tempdir().unwrap();
    let reference = push_private(&reg, tmp.path(), creds, b"helper");

    // The helper is the only source: no `auths` entry for the registry.
    let config = tmp.path().join("docker/config.json");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"{{"credHelpers":{{"{}":"banger-test"}},"auths":{{}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let with_helpers = |dir: &std::path::Path| PullOptions {
        credentials: Credentials::DockerConfig {
            path: config.clone(),
            helper_path: Some(dir.as_os_str().to_owned()),
        },
        ..opts()
    };

    let good = tmp.path().join("good-bin");
    fake_cred_helper(&good, &reg.addr, creds.0, creds.1);
    let cache = BlobCache::open(&tmp.path().join("good")).unwrap();
    let img = pull_events(&reference, &with_helpers(&good), &cache)
        .0
        .unwrap();
    assert_eq!(img.layers.len(), 1);

    let wrong = tmp.path().join("wrong-bin");
    fake_cred_helper(&wrong, &reg.addr, creds.0, "not-the-password");
    let cache = BlobCache::open(&tmp.path().join("wrong")).unwrap();
    let err = pull_events(&reference, &with_helpers(&wrong), &cache)
        .0
        .unwrap_err();
    assert!(matches!(err, OciError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    // No helper on the search path: a clear error, not an anonymous pull.
    let empty = tmp.path().join("no-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let err = pull_events(&reference, &with_helpers(&empty), &cache)
        .0
        .unwrap_err();
    assert!(matches!(err, OciError::CredentialHelper { .. }), "{err}");
    assert!(err.to_string().contains(&reg.addr), "{err}");
}

/// Several layers, so resume and corruption tests have something to count.
fn four_layer_image() -> Image {
    Image {
        arch: "amd64",
        variant: None,
        layers: (0..4)
            .map(|i| {
                let tar = TarBuilder::default()
                    .file(&format!("file{i}"), format!("layer {i}\n").as_bytes())
                    .finish();
                layer(&tar, Comp::Gzip)
            })
            .collect(),
        cmd: vec![],
        user: "1000:1000",
    }
}

#[test]
fn resumes_from_verified_blobs_and_prunes() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    common::single_image_layout(&layout, "t", &four_layer_image());
    reg.push(&layout, "t", "four:t", None, false);
    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();
    let reference = format!("{}/four:t", reg.addr);
    let img = pull_events(&reference, &opts(), &cache).0.unwrap();

    // An interrupted pull: one layer never arrived, another left a partial file.
    std::fs::remove_file(&img.layers[2].path).unwrap();
    std::fs::write(cache.root().join("sha256/.partial-abc"), b"half").unwrap();
    let (again, events) = pull_events(&reference, &opts(), &cache);
    assert_eq!(again.unwrap(), img);
    assert_eq!(downloaded(&events), [img.layers[2].digest.clone()]);
    let cached = events
        .iter()
        .filter(|e| matches!(e, PullEvent::BlobCached { .. }))
        .count();
    assert_eq!(cached, 4, "config + 3 layers reused");

    // Prune keeps what is referenced, frees the rest.
    let stray = common::sha256(b"stray");
    std::fs::write(cache.path_of(&stray).unwrap(), b"stray").unwrap();
    let keep = img.blob_digests().into_iter().collect();
    let report = cache.prune(&keep).unwrap();
    assert_eq!((report.blobs_removed, report.bytes_freed), (1, 5));
    for d in img.blob_digests() {
        assert!(cache.path_of(&d).unwrap().exists());
    }
    let report = cache.prune(&Default::default()).unwrap();
    assert_eq!(report.blobs_removed, 5);
}

#[test]
fn rejects_blob_with_wrong_digest() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let written = common::single_image_layout(&layout, "t", &four_layer_image());
    reg.push(&layout, "t", "bad:t", None, false);
    // The registry now serves other bytes of the same length for layer 1.
    let data = reg.blob_data(&written.layers[1]);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();
    let (res, _) = pull_events(&format!("{}/bad:t", reg.addr), &opts(), &cache);
    match res.unwrap_err() {
        OciError::DigestMismatch {
            what,
            digest,
            expected,
            actual,
        } => {
            assert_eq!(what, "layer 1");
            assert_eq!(digest, written.layers[1]);
            assert_eq!(expected, written.layers[1]);
            assert_eq!(actual, common::sha256(&bytes));
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(!cache.path_of(&written.layers[1]).unwrap().exists());
    let leftovers = std::fs::read_dir(cache.root().join("sha256"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0, "partial download left behind");
}

/// Push a one-layer image with `tar` as its layer, pull it and import it:
/// the import must fail naming layer 1 and `entry`, with nothing outside.
fn assert_hostile_rejected(reg: &Registry, name: &str, tar: Vec<u8>, entry: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let base = TarBuilder::default()
        .dir("etc/")
        .file("etc/ok", b"ok")
        .finish();
    let img = Image {
        arch: "amd64",
        variant: None,
        layers: vec![layer(&base, Comp::Gzip), layer(&tar, Comp::Gzip)],
        cmd: vec![],
        user: "1000:1000",
    };
    common::single_image_layout(&layout, "t", &img);
    reg.push(&layout, "t", &format!("{name}:t"), None, false);
    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();
    let pulled = pull_events(&format!("{}/{name}:t", reg.addr), &opts(), &cache)
        .0
        .unwrap();
    let images = tmp.path().join("a/b/images");
    std::fs::create_dir_all(&images).unwrap();
    let dest = images.join(name);
    let err = import_layers(&layers_of(&pulled), &dest, &common::worker(), &mut |_| {})
        .expect_err("hostile layer accepted");
    match &err {
        ImageError::Worker { message, .. } => assert!(
            message.contains("layer 1") && message.contains(entry),
            "{message}"
        ),
        other => panic!("unexpected error: {other}"),
    }
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        0,
        "temp dir left"
    );
    for p in ["evil", "a/evil", "a/b/evil", "passwd"] {
        assert!(!tmp.path().join(p).exists(), "{p} written outside");
    }
}

#[test]
fn hostile_layers_from_the_registry_are_rejected() {
    let reg = Registry::start();
    let file = |path: &str| TarBuilder::default().file(path, b"pwned").finish();
    assert_hostile_rejected(&reg, "dotdot", file("../evil"), "../evil");
    assert_hostile_rejected(&reg, "absdotdot", file("/x/../../evil"), "/x/../../evil");

    let outside = tempfile::tempdir().unwrap();
    let through = TarBuilder::default()
        .symlink("link", outside.path().to_str().unwrap())
        .file("link/evil", b"pwned")
        .finish();
    assert_hostile_rejected(&reg, "symlink", through, "link/evil");
    assert!(
        !outside.path().join("evil").exists(),
        "wrote through the symlink"
    );

    let hardlink = TarBuilder::default()
        .hardlink("passwd", "../../etc/passwd")
        .finish();
    assert_hostile_rejected(&reg, "hardlink", hardlink, "passwd");

    let whiteout = TarBuilder::default()
        .dir("etc/")
        .file("etc/.wh...", b"")
        .finish();
    assert_hostile_rejected(&reg, "whiteout", whiteout, "etc/.wh...");
}

#[test]
fn bad_references_and_unknown_tags_fail_cleanly() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(cache_dir.path()).unwrap();
    let err = pull_events("Bad:Ref", &opts(), &cache).0.unwrap_err();
    assert!(matches!(err, OciError::BadReference { .. }), "{err}");

    let reg = Registry::start();
    let err = pull_events(&format!("{}/absent:t", reg.addr), &opts(), &cache)
        .0
        .unwrap_err();
    assert!(matches!(err, OciError::Registry { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn bearer_token_flow() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    common::single_image_layout(&layout, "t", &four_layer_image());
    reg.push(&layout, "t", "team/tok:t", None, false);
    let proxy = TokenProxy::start(&reg.addr, "bob", "builder");
    let reference = format!("{}/team/tok:t", proxy.addr);

    let cache = BlobCache::open(&tmp.path().join("blobs")).unwrap();
    let err = pull_events(&reference, &opts(), &cache).0.unwrap_err();
    assert!(matches!(err, OciError::Auth { .. }), "{err}");

    let with_creds = PullOptions {
        credentials: Credentials::Basic {
            username: "bob".into(),
            password: "builder".into(),
        },
        ..opts()
    };
    let (img, events) = pull_events(&reference, &with_creds, &cache);
    let img = img.unwrap();
    assert_eq!(downloaded(&events).len(), 5);
    assert_eq!(img.layers.len(), 4);
    let seen = proxy.token_requests.lock().unwrap().clone();
    assert!(
        seen.iter().any(|q| q.contains("service=proxy")
            && q.contains("scope=repository%3Ateam%2Ftok%3Apull")
            || q.contains("scope=repository:team/tok:pull")),
        "{seen:?}"
    );
}
