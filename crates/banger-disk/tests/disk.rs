//! Integration tests against the real e2fsprogs tools. A missing tool fails
//! the test with `ToolMissing`, never a silent skip.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use banger_disk::{
    DiskError, FileKind, MkfsOptions, OwnerFix, SeedEntry, SeedManifest, Staging, apply_owners,
    build_disk_with_manifest, fsck_check, grow, list_dir, mkfs_from_dir, put_file, read_file, stat,
};

const GIB: u64 = 1 << 30;

fn overlay_staging(parent: &Path) -> Staging {
    let mut st = Staging::new_in(parent).unwrap();
    st.file("upper/etc/hostname", b"vm1\n", 0, 0, 0o644)
        .unwrap();
    st.file("upper/etc/hosts", b"127.0.0.1 localhost vm1\n", 0, 0, 0o644)
        .unwrap();
    st.file(
        "upper/etc/resolv.conf",
        b"nameserver 10.0.0.1\n",
        0,
        0,
        0o644,
    )
    .unwrap();
    st.file(
        "upper/etc/ssh/sshd_config.d/99-banger.conf",
        b"PermitRootLogin prohibit-password\n",
        0,
        0,
        0o600,
    )
    .unwrap();
    st.dir("upper/root/.ssh", 0, 0, 0o700).unwrap();
    st.file("upper/home/u/name with \"quotes\"", b"q", 1000, 1000, 0o640)
        .unwrap();
    st.symlink("upper/etc/localtime", "/usr/share/zoneinfo/UTC", 0, 0)
        .unwrap();
    st.dir("work", 0, 0, 0o755).unwrap();
    st
}

#[test]
fn overlay_disk_is_sparse_root_owned_and_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let st = overlay_staging(tmp.path());
    let out = tmp.path().join("overlay.ext4");
    let started = Instant::now();
    st.build(&out, 8 * GIB, &MkfsOptions::default()).unwrap();
    eprintln!("8 GiB overlay disk built in {:?}", started.elapsed());

    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 8 * GIB);
    let allocated = meta.blocks() * 512;
    assert!(allocated < 64 << 20, "allocated {allocated} bytes");

    assert_eq!(read_file(&out, "/upper/etc/hostname").unwrap(), b"vm1\n");
    let conf = stat(&out, "/upper/etc/ssh/sshd_config.d/99-banger.conf").unwrap();
    assert_eq!(
        (conf.kind, conf.uid, conf.gid, conf.perm),
        (FileKind::Regular, 0, 0, 0o600)
    );
    let ssh = stat(&out, "/upper/root/.ssh").unwrap();
    assert_eq!(
        (ssh.kind, ssh.uid, ssh.perm),
        (FileKind::Directory, 0, 0o700)
    );
    let etc = stat(&out, "/upper/etc").unwrap();
    assert_eq!((etc.uid, etc.gid, etc.perm), (0, 0, 0o755));
    let quoted = stat(&out, "/upper/home/u/name with \"quotes\"").unwrap();
    assert_eq!((quoted.uid, quoted.gid, quoted.perm), (1000, 1000, 0o640));
    let lt = stat(&out, "/upper/etc/localtime").unwrap();
    assert_eq!(lt.kind, FileKind::Symlink);
    assert_eq!(
        lt.symlink_target.as_deref(),
        Some(&b"/usr/share/zoneinfo/UTC"[..])
    );
    let root = stat(&out, "/").unwrap();
    assert_eq!((root.uid, root.gid, root.perm), (0, 0, 0o755));

    let names: Vec<String> = list_dir(&out, "/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for want in ["upper", "work", "lost+found"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
    fsck_check(&out).unwrap();
}

#[test]
fn owner_fix_turns_user_file_into_root_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/owned by 1000"), b"x").unwrap();
    std::fs::set_permissions(
        src.join("etc/owned by 1000"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    // As root, make the file really belong to 1000 so mkfs copies that owner;
    // as a normal user it already belongs to a non-root uid.
    if effective_uid() == 0 {
        std::os::unix::fs::chown(src.join("etc/owned by 1000"), Some(1000), Some(1000)).unwrap();
    }
    let out = tmp.path().join("img.ext4");
    mkfs_from_dir(&src, &out, GIB, &MkfsOptions::default()).unwrap();
    let before = stat(&out, "/etc/owned by 1000").unwrap();
    assert_ne!(before.uid, 0);

    apply_owners(
        &out,
        &[OwnerFix {
            guest_path: "/etc/owned by 1000".into(),
            uid: 0,
            gid: 0,
            kind: FileKind::Regular,
            perm: Some(0o4755),
        }],
    )
    .unwrap();
    let after = stat(&out, "/etc/owned by 1000").unwrap();
    assert_eq!((after.uid, after.gid, after.perm), (0, 0, 0o4755));
    assert_eq!(after.kind, FileKind::Regular);
    fsck_check(&out).unwrap();
}

#[test]
fn owner_fix_on_missing_path_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let out = tmp.path().join("img.ext4");
    mkfs_from_dir(&src, &out, GIB, &MkfsOptions::default()).unwrap();
    let err = apply_owners(
        &out,
        &[OwnerFix {
            guest_path: "/nope".into(),
            uid: 0,
            gid: 0,
            kind: FileKind::Regular,
            perm: None,
        }],
    )
    .unwrap_err();
    match &err {
        DiskError::Debugfs { errors, .. } => {
            assert!(errors.iter().any(|e| e.contains("/nope")), "{errors:?}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(matches!(
        read_file(&out, "/nope"),
        Err(DiskError::Debugfs { .. })
    ));
}

#[test]
fn grow_keeps_files_and_shrink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("keep"), b"still here").unwrap();
    let out = tmp.path().join("work.ext4");
    mkfs_from_dir(&src, &out, GIB, &MkfsOptions::default()).unwrap();

    grow(&out, 2 * GIB).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2 * GIB);
    assert_eq!(read_file(&out, "/keep").unwrap(), b"still here");
    fsck_check(&out).unwrap();

    let err = grow(&out, GIB).unwrap_err();
    assert!(
        matches!(err, DiskError::Shrink { current, requested, .. } if current == 2 * GIB && requested == GIB)
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2 * GIB);
}

#[test]
fn grow_after_a_write_runs_the_required_check() {
    // A debugfs write bumps the superblock's write time past the last check,
    // which is what makes resize2fs demand `e2fsck -f` (as after a VM ran).
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let out = tmp.path().join("work.ext4");
    mkfs_from_dir(&src, &out, GIB, &MkfsOptions::default()).unwrap();
    let mtime_bump = std::process::Command::new("debugfs")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["-w", "-R", "ssv mtime 20300101000000"])
        .arg(&out)
        .status()
        .expect("debugfs (e2fsprogs) must be installed");
    assert!(mtime_bump.success());
    grow(&out, 3 * GIB).unwrap();
    assert_eq!(read_file(&out, "/f").unwrap(), b"x");
    fsck_check(&out).unwrap();
}

#[test]
fn failed_mkfs_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 3 MiB of incompressible-ish data cannot fit in a 2 MiB filesystem.
    let data: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13).to_le_bytes()[0])
        .collect();
    std::fs::write(src.join("big"), data).unwrap();
    let out = tmp.path().join("small.ext4");
    let err = mkfs_from_dir(&src, &out, 2 << 20, &MkfsOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::NoSpace { .. } | DiskError::ToolFailed { .. }
        ),
        "{err}"
    );
    assert!(!out.exists());

    let missing = tmp.path().join("no-such-dir");
    let out2 = tmp.path().join("x.ext4");
    assert!(mkfs_from_dir(&missing, &out2, GIB, &MkfsOptions::default()).is_err());
    assert!(!out2.exists());
}

#[test]
fn work_disk_from_seed_gets_manifest_owners() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    std::fs::create_dir_all(seed.join(".ssh")).unwrap();
    std::fs::write(seed.join(".bashrc"), b"PS1='# '\n").unwrap();
    std::fs::set_permissions(seed.join(".bashrc"), PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::set_permissions(seed.join(".ssh"), PermissionsExt::from_mode(0o755)).unwrap();
    let manifest = SeedManifest {
        version: 1,
        entries: vec![
            SeedEntry {
                path: ".".into(),
                uid: 0,
                gid: 0,
                mode: 0o700,
                kind: FileKind::Directory,
            },
            SeedEntry {
                path: ".bashrc".into(),
                uid: 0,
                gid: 0,
                mode: 0o644,
                kind: FileKind::Regular,
            },
            SeedEntry {
                path: ".ssh".into(),
                uid: 1000,
                gid: 1000,
                mode: 0o700,
                kind: FileKind::Directory,
            },
        ],
    };
    let out = tmp.path().join("work.ext4");
    build_disk_with_manifest(&seed, &manifest, &out, 8 * GIB).unwrap();
    let root = stat(&out, "/").unwrap();
    assert_eq!((root.uid, root.gid, root.perm), (0, 0, 0o700));
    let ssh = stat(&out, "/.ssh").unwrap();
    assert_eq!((ssh.uid, ssh.gid, ssh.perm), (1000, 1000, 0o700));
    assert_eq!(read_file(&out, "/.bashrc").unwrap(), b"PS1='# '\n");
    fsck_check(&out).unwrap();

    // A manifest naming something the seed lacks is an error, and no image stays.
    let bad = SeedManifest {
        version: 1,
        entries: vec![SeedEntry {
            path: "gone".into(),
            uid: 0,
            gid: 0,
            mode: 0o644,
            kind: FileKind::Regular,
        }],
    };
    let out2 = tmp.path().join("work2.ext4");
    assert!(build_disk_with_manifest(&seed, &bad, &out2, GIB).is_err());
    assert!(!out2.exists());
}

fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

#[test]
fn put_file_adds_a_private_file_and_its_dir_then_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("keep"), b"still here").unwrap();
    let out = tmp.path().join("work.ext4");
    mkfs_from_dir(&src, &out, GIB, &MkfsOptions::default()).unwrap();

    put_file(
        &out,
        "/.ssh/authorized_keys",
        b"key one\n",
        (0, 0, 0o600),
        0o700,
    )
    .unwrap();
    let dir = stat(&out, "/.ssh").unwrap();
    assert_eq!(
        (dir.kind, dir.uid, dir.gid, dir.perm),
        (FileKind::Directory, 0, 0, 0o700)
    );
    let f = stat(&out, "/.ssh/authorized_keys").unwrap();
    assert_eq!(
        (f.kind, f.uid, f.gid, f.perm),
        (FileKind::Regular, 0, 0, 0o600)
    );
    assert_eq!(
        read_file(&out, "/.ssh/authorized_keys").unwrap(),
        b"key one\n"
    );

    // Again: the file is replaced, the directory kept.
    put_file(
        &out,
        "/.ssh/authorized_keys",
        b"key two\n",
        (0, 0, 0o600),
        0o755,
    )
    .unwrap();
    assert_eq!(
        read_file(&out, "/.ssh/authorized_keys").unwrap(),
        b"key two\n"
    );
    assert_eq!(stat(&out, "/.ssh").unwrap().perm, 0o700);
    assert_eq!(read_file(&out, "/keep").unwrap(), b"still here");
    fsck_check(&out).unwrap();
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "no temporary file left beside the image: {left:?}"
    );
}
