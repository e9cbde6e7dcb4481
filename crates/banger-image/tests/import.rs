//! Integration tests: real tarballs through the real `banger-rootfs` worker
//! under `fakeroot`, checked inside the resulting ext4 with debugfs. Missing
//! tools (fakeroot, e2fsprogs) fail the tests with the reason.

use std::path::{Path, PathBuf};
use std::time::Instant;

use banger_disk::{FileKind, SeedManifest, build_disk_with_manifest, fsck_check, read_file, stat};
use banger_image::{
    ImageError, ImportEvent, ImportStage, ImportedImage, LayerApplier, import_rootfs,
};
use tar::{EntryType, Header};

const WORKER: &str = env!("CARGO_BIN_EXE_banger-rootfs");

/// Append an entry with raw name bytes: `tar::Builder`'s own helpers refuse
/// `..`, which the hostile cases need.
#[allow(clippy::too_many_arguments)]
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    link: &str,
    data: &[u8],
    uid: u64,
    gid: u64,
    mode: u32,
) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    {
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn device(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    major: u32,
    minor: u32,
    mode: u32,
) {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(mode);
    h.set_size(0);
    h.set_device_major(major).unwrap();
    h.set_device_minor(minor).unwrap();
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
}

/// A small root filesystem exercising everything the importer must keep.
fn sample_rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let d = EntryType::Directory;
    raw(&mut b, "./", d, "", b"", 0, 0, 0o755);
    for dir in [
        "./etc/",
        "./usr/",
        "./usr/bin/",
        "./usr/lib/",
        "./usr/lib/systemd/",
        "./sbin/",
        "./dev/",
        "./home/",
        "./home/u/",
    ] {
        raw(&mut b, dir, d, "", b"", 0, 0, 0o755);
    }
    raw(&mut b, "./root/", d, "", b"", 0, 0, 0o700);
    raw(
        &mut b,
        "./root/.bashrc",
        EntryType::Regular,
        "",
        b"export PS1='# '\n",
        0,
        0,
        0o644,
    );
    raw(&mut b, "./root/.ssh/", d, "", b"", 0, 0, 0o700);
    raw(
        &mut b,
        "./etc/hostname",
        EntryType::Regular,
        "",
        b"image\n",
        0,
        0,
        0o644,
    );
    raw(
        &mut b,
        "./home/u/notes",
        EntryType::Regular,
        "",
        b"mine\n",
        1000,
        1000,
        0o640,
    );
    raw(
        &mut b,
        "./usr/bin/su",
        EntryType::Regular,
        "",
        b"\x7fELF-ish",
        0,
        0,
        0o4755,
    );
    raw(
        &mut b,
        "./usr/bin/su-link",
        EntryType::Link,
        "./usr/bin/su",
        b"",
        0,
        0,
        0o4755,
    );
    raw(
        &mut b,
        "./usr/lib/systemd/systemd",
        EntryType::Regular,
        "",
        b"init",
        0,
        0,
        0o755,
    );
    raw(
        &mut b,
        "./sbin/init",
        EntryType::Symlink,
        "/usr/lib/systemd/systemd",
        b"",
        0,
        0,
        0o777,
    );
    device(&mut b, "./dev/null", EntryType::Char, 1, 3, 0o666);
    // No entry for ./run/: the parent is created implicitly.
    device(&mut b, "./run/initctl", EntryType::Fifo, 0, 0, 0o600);
    b.into_inner().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn import(source: &Path, dest: &Path) -> (Result<ImportedImage, ImageError>, Vec<ImportEvent>) {
    let mut events = Vec::new();
    let res = import_rootfs(source, dest, Path::new(WORKER), &mut |e| events.push(e));
    (res, events)
}

fn check_sample_image(img: &ImportedImage) {
    let base = &img.base_path;
    assert!(img.has_init);
    let su = stat(base, "/usr/bin/su").unwrap();
    assert_eq!(
        (su.kind, su.uid, su.gid, su.perm, su.links),
        (FileKind::Regular, 0, 0, 0o4755, 2)
    );
    let su2 = stat(base, "/usr/bin/su-link").unwrap();
    assert_eq!(su2.inode, su.inode);
    let notes = stat(base, "/home/u/notes").unwrap();
    assert_eq!((notes.uid, notes.gid, notes.perm), (1000, 1000, 0o640));
    assert_eq!(read_file(base, "/home/u/notes").unwrap(), b"mine\n");
    let null = stat(base, "/dev/null").unwrap();
    assert_eq!(
        (null.kind, null.device, null.perm, null.uid),
        (FileKind::CharDevice, Some((1, 3)), 0o666, 0)
    );
    let fifo = stat(base, "/run/initctl").unwrap();
    assert_eq!((fifo.kind, fifo.perm), (FileKind::Fifo, 0o600));
    let run = stat(base, "/run").unwrap();
    assert_eq!((run.kind, run.uid, run.gid), (FileKind::Directory, 0, 0));
    let init = stat(base, "/sbin/init").unwrap();
    assert_eq!(
        init.symlink_target.as_deref(),
        Some(&b"/usr/lib/systemd/systemd"[..])
    );
    let root = stat(base, "/root").unwrap();
    assert_eq!((root.uid, root.perm), (0, 0o700));
    fsck_check(base).unwrap();

    let manifest = SeedManifest::load(&img.work_seed_manifest_path).unwrap();
    let find = |p: &str| {
        manifest
            .entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing: {manifest:?}"))
    };
    let dot = find(".");
    assert_eq!(
        (dot.uid, dot.gid, dot.mode, dot.kind),
        (0, 0, 0o700, FileKind::Directory)
    );
    let rc = find(".bashrc");
    assert_eq!(
        (rc.uid, rc.gid, rc.mode, rc.kind),
        (0, 0, 0o644, FileKind::Regular)
    );
    assert_eq!(find(".ssh").kind, FileKind::Directory);
    assert_eq!(
        std::fs::read(img.work_seed_dir.join(".bashrc")).unwrap(),
        b"export PS1='# '\n"
    );

    // The seed makes a work disk with the true owners.
    let work = img.base_path.with_file_name("work.ext4");
    build_disk_with_manifest(&img.work_seed_dir, &manifest, &work, 8 << 30).unwrap();
    let w = stat(&work, "/").unwrap();
    assert_eq!((w.uid, w.perm), (0, 0o700));
    assert_eq!(read_file(&work, "/.bashrc").unwrap(), b"export PS1='# '\n");
    std::fs::remove_file(work).unwrap();
}

fn compressed(kind: &str, tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match kind {
        "tar" => tar.to_vec(),
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(tar, 3).unwrap(),
        other => panic!("{other}"),
    }
}

fn import_sample(kind: &str) {
    let tmp = tempfile::tempdir().unwrap();
    // A misleading name: detection must go by content.
    let src = write(
        tmp.path(),
        "rootfs.bin",
        &compressed(kind, &sample_rootfs_tar()),
    );
    let dest = tmp.path().join("images/sample");
    std::fs::create_dir(tmp.path().join("images")).unwrap();
    let started = Instant::now();
    let (res, events) = import(&src, &dest);
    let img = res.unwrap();
    eprintln!("{kind} import took {:?}", started.elapsed());
    assert_eq!(img.base_path, dest.join("rootfs.ext4"));
    let stages: Vec<ImportStage> = events
        .iter()
        .filter_map(|e| match e {
            ImportEvent::Stage { stage } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages,
        [
            ImportStage::Unpack,
            ImportStage::BuildBase,
            ImportStage::WorkSeed
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ImportEvent::Progress { done, total, .. } if done == total))
    );
    // Only the three outputs; no staging tree or temp dirs left behind
    // once the scratch tree is dropped.
    // A tree unpacked on disk is handed back; one in memory is gone.
    assert_eq!(img.scratch.is_some(), !img.staged_in_memory);
    let mut img = img;
    drop(img.scratch.take());
    let mut names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["rootfs.ext4", "work-seed", "work-seed.json"]);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("images"))
            .unwrap()
            .count(),
        1
    );
    check_sample_image(&img);
}

#[test]
fn imports_plain_tar() {
    import_sample("tar");
}

#[test]
fn imports_tar_gz() {
    import_sample("gz");
}

#[test]
fn imports_tar_zst() {
    import_sample("zst");
}

#[test]
fn imports_directory_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("root/.config")).unwrap();
    std::fs::write(root.join("etc/os-release"), b"ID=test\n").unwrap();
    std::fs::write(root.join("root/.config/x"), b"x").unwrap();
    let dest = tmp.path().join("img");
    let (res, events) = import(&root, &dest);
    let img = res.unwrap();
    assert!(!img.has_init);
    assert!(!events.iter().any(|e| matches!(
        e,
        ImportEvent::Stage {
            stage: ImportStage::Unpack
        }
    )));
    assert_eq!(
        read_file(&img.base_path, "/etc/os-release").unwrap(),
        b"ID=test\n"
    );
    assert_eq!(stat(&img.base_path, "/").unwrap().uid, 0);
    fsck_check(&img.base_path).unwrap();
    let manifest = SeedManifest::load(&img.work_seed_manifest_path).unwrap();
    assert!(manifest.entries.iter().any(|e| e.path == ".config/x"));
    // The source tree is untouched.
    assert!(root.join("etc/os-release").exists());
}

/// Each hostile archive must fail, name the entry, write nothing outside and
/// leave no destination or temporary directory.
fn assert_rejected(tar: Vec<u8>, entry: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let images = tmp.path().join("a/b/images");
    std::fs::create_dir_all(&images).unwrap();
    let src = write(tmp.path(), "hostile.tar", &tar);
    let dest = images.join("hostile");
    let (res, _) = import(&src, &dest);
    let err = res.expect_err("hostile archive accepted");
    match &err {
        ImageError::Worker { message, .. } => {
            assert!(
                message.contains("layer 0") && message.contains(entry),
                "{message}"
            )
        }
        other => panic!("unexpected error: {other}"),
    }
    // The worker said the archive, not the machine, was at fault.
    assert!(err.is_input_error(), "{err:?}");
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        0,
        "temp dir left behind"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    for p in ["evil", "a/evil", "a/b/evil", "passwd"] {
        assert!(!tmp.path().join(p).exists(), "{p} written outside");
    }

    // The applier itself reports the typed error.
    let stage = tmp.path().join("stage");
    std::fs::create_dir(&stage).unwrap();
    let mut applier = LayerApplier::open(&stage).unwrap();
    let err = applier
        .apply(0, &tar[..])
        .expect_err("applier accepted hostile archive");
    assert!(
        matches!(&err, ImageError::UnsafeEntry { layer: 0, entry: e, .. } if e.contains(entry)),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

fn one_file_tar(path: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, path, EntryType::Regular, "", b"pwned", 0, 0, 0o644);
    b.into_inner().unwrap()
}

#[test]
fn rejects_dotdot_path() {
    assert_rejected(one_file_tar("../evil"), "../evil");
}

#[test]
fn rejects_absolute_path_climbing_out() {
    assert_rejected(one_file_tar("/abs/../../evil"), "/abs/../../evil");
}

#[test]
fn rejects_write_through_earlier_symlink() {
    let tmp_outside = std::env::temp_dir().join(format!("banger-outside-{}", std::process::id()));
    std::fs::create_dir_all(&tmp_outside).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    raw(
        &mut b,
        "link",
        EntryType::Symlink,
        tmp_outside.to_str().unwrap(),
        b"",
        0,
        0,
        0o777,
    );
    raw(
        &mut b,
        "link/evil",
        EntryType::Regular,
        "",
        b"pwned",
        0,
        0,
        0o644,
    );
    assert_rejected(b.into_inner().unwrap(), "link/evil");
    let leaked = tmp_outside.join("evil").exists();
    std::fs::remove_dir_all(&tmp_outside).unwrap();
    assert!(!leaked, "wrote through the symlink");
}

#[test]
fn rejects_hardlink_out_of_root() {
    let mut b = tar::Builder::new(Vec::new());
    raw(
        &mut b,
        "passwd",
        EntryType::Link,
        "../../etc/passwd",
        b"",
        0,
        0,
        0o644,
    );
    assert_rejected(b.into_inner().unwrap(), "passwd");
}

#[test]
fn rejects_whiteout_of_dotdot_and_dot() {
    for name in ["etc/.wh...", "etc/.wh..", "etc/.wh."] {
        let mut b = tar::Builder::new(Vec::new());
        raw(&mut b, "etc/", EntryType::Directory, "", b"", 0, 0, 0o755);
        raw(&mut b, name, EntryType::Regular, "", b"", 0, 0, 0o644);
        assert_rejected(b.into_inner().unwrap(), name);
    }
}

#[test]
fn failed_import_leaves_no_destination() {
    let tmp = tempfile::tempdir().unwrap();
    // Valid gzip header, then garbage: fails mid-unpack inside the worker.
    let mut bad = compressed("gz", &sample_rootfs_tar());
    bad.truncate(bad.len() / 2);
    let src = write(tmp.path(), "truncated.tar.gz", &bad);
    let dest = tmp.path().join("img");
    let (res, _) = import(&src, &dest);
    assert!(
        matches!(&res, Err(e @ ImageError::Worker { .. }) if e.is_input_error()),
        "a truncated archive is the source's fault: {res:?}"
    );
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "leftovers beside dest"
    );

    let not_tar = write(tmp.path(), "x.tar", b"hello, not a tarball");
    assert!(matches!(
        import(&not_tar, &dest).0,
        Err(ImageError::UnsupportedFormat { .. })
    ));
    assert!(matches!(
        import(&tmp.path().join("nope"), &dest).0,
        Err(ImageError::NotFound { .. })
    ));
    assert!(!dest.exists());

    std::fs::create_dir(&dest).unwrap();
    let good = write(tmp.path(), "good.tar", &sample_rootfs_tar());
    assert!(matches!(
        import(&good, &dest).0,
        Err(ImageError::DestinationExists { .. })
    ));
}

#[test]
fn oci_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut applier = LayerApplier::open(tmp.path()).unwrap();
    let mut l0 = tar::Builder::new(Vec::new());
    for (p, k) in [
        ("a/", EntryType::Directory),
        ("a/old", EntryType::Regular),
        ("a/sub/", EntryType::Directory),
        ("a/sub/deep", EntryType::Regular),
        ("gone", EntryType::Regular),
        ("d/", EntryType::Directory),
        ("d/x", EntryType::Regular),
    ] {
        raw(&mut l0, p, k, "", b"", 0, 0, 0o755);
    }
    applier.apply(0, &l0.into_inner().unwrap()[..]).unwrap();
    let mut l1 = tar::Builder::new(Vec::new());
    raw(&mut l1, "a/new", EntryType::Regular, "", b"n", 0, 0, 0o644);
    raw(
        &mut l1,
        "a/.wh..wh..opq",
        EntryType::Regular,
        "",
        b"",
        0,
        0,
        0o644,
    );
    raw(
        &mut l1,
        ".wh.gone",
        EntryType::Regular,
        "",
        b"",
        0,
        0,
        0o644,
    );
    raw(&mut l1, ".wh.d", EntryType::Regular, "", b"", 0, 0, 0o644);
    raw(
        &mut l1,
        "d",
        EntryType::Regular,
        "",
        b"now a file",
        0,
        0,
        0o644,
    );
    let stats = applier.apply(1, &l1.into_inner().unwrap()[..]).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let root = tmp.path();
    assert!(
        root.join("a/new").exists(),
        "same-layer entry kept by opaque marker"
    );
    assert!(!root.join("a/old").exists() && !root.join("a/sub").exists());
    assert!(!root.join("gone").exists());
    assert_eq!(std::fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(!root.join("a/.wh..wh..opq").exists() && !root.join(".wh.gone").exists());
}

/// The real point of fakeroot: an unprivileged worker still produces
/// root-owned files, setuid bits and device nodes. As root, drop to `nobody`
/// with setpriv so this is actually exercised.
#[test]
fn worker_as_unprivileged_user_keeps_ownership() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = write(tmp.path(), "rootfs.tar", &sample_rootfs_tar());
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tmp.path().join("build");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let mut cmd = if euid == 0 {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "fakeroot",
            "--",
        ]);
        c
    } else {
        let mut c = std::process::Command::new("fakeroot");
        c.arg("--");
        c
    };
    let output = cmd
        .arg(WORKER)
        .args(["build", "--tarball"])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("setpriv (util-linux) and fakeroot must be installed");
    assert!(
        output.status.success(),
        "worker failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let base = out.join("rootfs.ext4");
    // Really written by an unprivileged user...
    let meta = std::fs::metadata(&base).unwrap();
    assert_ne!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    // ...yet owners, setuid bits and devices are as the tarball said.
    let su = stat(&base, "/usr/bin/su").unwrap();
    assert_eq!((su.uid, su.gid, su.perm, su.links), (0, 0, 0o4755, 2));
    let notes = stat(&base, "/home/u/notes").unwrap();
    assert_eq!((notes.uid, notes.gid), (1000, 1000));
    let null = stat(&base, "/dev/null").unwrap();
    assert_eq!(
        (null.kind, null.device),
        (FileKind::CharDevice, Some((1, 3)))
    );
    let etc = stat(&base, "/etc").unwrap();
    assert_eq!(etc.uid, 0);
    let manifest = SeedManifest::load(&out.join("work-seed.json")).unwrap();
    let rc = manifest
        .entries
        .iter()
        .find(|e| e.path == ".bashrc")
        .unwrap();
    assert_eq!((rc.uid, rc.gid), (0, 0));
    fsck_check(&base).unwrap();
}

#[test]
fn import_stages_in_memory_and_leaves_nothing_there() {
    let tmp = tempfile::tempdir().unwrap();
    let src = write(tmp.path(), "rootfs.tar", &sample_rootfs_tar());
    std::fs::create_dir(tmp.path().join("images")).unwrap();
    let dest = tmp.path().join("images/sample");
    let (res, _) = import(&src, &dest);
    let img = res.unwrap();
    check_sample_image(&img);
    let on_tmpfs = nix::sys::statfs::statfs("/dev/shm")
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    assert_eq!(img.staged_in_memory, on_tmpfs);
    assert_eq!(
        img.scratch.is_some(),
        !on_tmpfs,
        "only a disk tree is handed back"
    );
    drop(img);
    // Nothing beside the image, and nothing left in memory.
    assert_eq!(
        std::fs::read_dir(tmp.path().join("images"))
            .unwrap()
            .count(),
        1
    );
    let staged: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().unwrap().to_string_lossy().starts_with(
                        &banger_image::memory_staging_prefix(&tmp.path().join("images")),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(staged.is_empty(), "{staged:?}");
}

/// An archive bigger than the memory staging (a 1 MiB tmpfs in a private
/// mount namespace) is unpacked on disk instead, and the import succeeds.
#[test]
fn full_memory_staging_falls_back_to_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    raw(&mut b, "srv/big", EntryType::Regular, "", &big, 0, 0, 0o644);
    let src = write(tmp.path(), "big.tar", &b.into_inner().unwrap());
    let (mem, out) = (tmp.path().join("mem"), tmp.path().join("out"));
    std::fs::create_dir(&mem).unwrap();
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {m} && exec {w} build --memory-staging {m} --tarball {s} --out {o}",
        m = mem.display(),
        w = WORKER,
        s = src.display(),
        o = out.display()
    );
    let run = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done = stdout.lines().last().unwrap();
    assert!(done.contains(r#""staged_in_memory":false"#), "{done}");
    assert_eq!(
        std::fs::metadata(out.join("staging/srv/big"))
            .unwrap()
            .len(),
        3_000_000
    );
    assert_eq!(std::fs::read_dir(&mem).unwrap().count(), 0);
}

/// xattrs from PAX headers (`SCHILY.xattr.*`), file capabilities
/// included, reach the ext4 base through fakeroot and `mkfs.ext4 -d`.
#[test]
fn xattrs_reach_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    // cap_net_raw in the effective and permitted sets, as Debian's ping has.
    let cap: &[u8] = &[
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    b.append_pax_extensions([
        ("SCHILY.xattr.user.banger", &b"yes"[..]),
        ("SCHILY.xattr.security.capability", cap),
    ])
    .unwrap();
    raw(
        &mut b,
        "bin/ping",
        EntryType::Regular,
        "",
        b"ping",
        0,
        0,
        0o755,
    );
    let src = write(tmp.path(), "caps.tar", &b.into_inner().unwrap());
    std::fs::create_dir(tmp.path().join("images")).unwrap();
    let (res, _) = import(&src, &tmp.path().join("images/caps"));
    let img = res.unwrap();
    let out = std::process::Command::new("debugfs")
        .args(["-R", "ea_list /bin/ping"])
        .arg(&img.base_path)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("user.banger (3) = \"yes\""), "{listed}");
    assert!(
        listed.contains("security.capability (20) = 01 00 00 02 00 20 00 00"),
        "{listed}"
    );
}
