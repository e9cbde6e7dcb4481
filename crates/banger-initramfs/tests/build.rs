//! The builder against a synthetic module tree (real ELF objects made by
//! gcc, one xz-compressed, one "built in") and, when available, the modules
//! of a real Debian kernel. Archives are checked by extracting them with
//! GNU cpio.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use banger_initramfs::{InitramfsError, build, build_with, cache_key, resolve};
use banger_kernel::{KernelError, ModuleIndex};

/// Compiles an object whose `.modinfo` holds `depends=<deps>`, as the
/// kernel's modpost writes it.
fn fake_module(dir: &Path, rel: &str, deps: &str) -> PathBuf {
    let out = dir.join(rel);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let src = dir.join("m.c");
    std::fs::write(
        &src,
        format!(
            "__attribute__((section(\".modinfo\"), used)) static const char a[] = \"license=GPL\";\n\
             __attribute__((section(\".modinfo\"), used)) static const char b[] = \"depends={deps}\";\n\
             int f(void) {{ return 1; }}\n"
        ),
    )
    .unwrap();
    let st = Command::new("gcc")
        .args(["-c", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc is required for this test");
    assert!(st.success());
    out
}

/// lib/modules/<release> with: a (depends b,c), b, c built in, d.ko.xz
/// (depends b), e-dash (named with a dash on disk).
fn tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let rel = t.path().join("6.1.0-test");
    fake_module(&rel, "kernel/a/a.ko", "b,c");
    fake_module(&rel, "kernel/b/b.ko", "");
    let d = fake_module(&rel, "kernel/d/d.ko", "b");
    let raw = std::fs::read(&d).unwrap();
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(&raw).unwrap();
    std::fs::write(rel.join("kernel/d/d.ko.xz"), enc.finish().unwrap()).unwrap();
    std::fs::remove_file(&d).unwrap();
    std::fs::write(rel.join("kernel/d/d.orig"), raw).unwrap();
    fake_module(&rel, "kernel/e/e-dash.ko", "");
    std::fs::write(rel.join("modules.builtin"), "kernel/c/c.ko\n").unwrap();
    (t, rel)
}

fn extract(archive: &Path, into: &Path) {
    let data = std::fs::read(archive).unwrap();
    let mut child = Command::new("cpio")
        .args(["-id", "--quiet", "--no-absolute-filenames"])
        .current_dir(into)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cpio(1) is required for this test");
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resolves_dependencies_first_and_skips_builtins() {
    let (_t, rel) = tree();
    let idx = ModuleIndex::open(&rel).unwrap();
    assert!(idx.is_builtin("c"));
    let names: Vec<String> = resolve(&rel, &["a", "d", "e_dash", "b"])
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["b", "a", "d", "e_dash"]);
    assert!(resolve(&rel, &["c"]).unwrap().is_empty());
    match resolve(&rel, &["nope"]) {
        Err(InitramfsError::Modules(KernelError::UnknownModule { name, .. })) => {
            assert_eq!(name, "nope")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn archive_holds_init_modules_and_list() {
    let (t, rel) = tree();
    let agent = t.path().join("agent");
    std::fs::write(&agent, b"\x7fELF fake agent").unwrap();
    let out = t.path().join("initramfs.cpio");
    let info = build(&agent, Some(&rel), &["a", "d"], &out).unwrap();
    assert_eq!(info.kernel_release.as_deref(), Some("6.1.0-test"));
    assert_eq!(info.modules, ["b", "a", "d"]);
    assert_eq!(info.size, std::fs::metadata(&out).unwrap().len());

    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    extract(&out, &x);
    assert_eq!(
        std::fs::read(x.join("init")).unwrap(),
        b"\x7fELF fake agent"
    );
    assert_eq!(
        std::fs::read_to_string(x.join("lib/modules/banger.list")).unwrap(),
        "6.1.0-test/kernel/b/b.ko\n6.1.0-test/kernel/a/a.ko\n6.1.0-test/kernel/d/d.ko\n"
    );
    // The compressed module is stored decompressed, under the .ko name.
    assert_eq!(
        std::fs::read(x.join("lib/modules/6.1.0-test/kernel/d/d.ko")).unwrap(),
        std::fs::read(rel.join("kernel/d/d.orig")).unwrap()
    );
    for d in ["dev", "proc", "sys", "newroot", "mnt/base", "mnt/overlay"] {
        assert!(x.join(d).is_dir(), "{d}");
    }

    // Same inputs, same key; another agent, another key.
    assert_eq!(
        cache_key(&agent, Some(&rel), &["a", "d"]).unwrap(),
        info.cache_key
    );
    std::fs::write(&agent, b"\x7fELF other agent").unwrap();
    assert_ne!(
        cache_key(&agent, Some(&rel), &["a", "d"]).unwrap(),
        info.cache_key
    );
    assert_ne!(
        cache_key(&agent, Some(&rel), &["a"]).unwrap(),
        info.cache_key
    );
}

#[test]
fn gzip_archive_is_gzip_and_equal_inside() {
    let (t, rel) = tree();
    let agent = t.path().join("agent");
    std::fs::write(&agent, vec![7u8; 100_000]).unwrap();
    let plain = t.path().join("plain");
    let gz = t.path().join("gz");
    build(&agent, Some(&rel), &["a"], &plain).unwrap();
    let info = build_with(
        &agent,
        Some(&rel),
        &["a"],
        &gz,
        banger_initramfs::Compression::Gzip,
    )
    .unwrap();
    let bytes = std::fs::read(&gz).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    assert!(info.size < std::fs::metadata(&plain).unwrap().len());
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(out.stdout, std::fs::read(&plain).unwrap());
}

#[test]
fn agent_only_archive_without_modules() {
    let t = tempfile::tempdir().unwrap();
    let agent = t.path().join("agent");
    std::fs::write(&agent, b"a").unwrap();
    let info = build(&agent, None, &["virtio_blk"], &t.path().join("o")).unwrap();
    assert!(info.modules.is_empty());
    assert_eq!(info.kernel_release, None);
}

/// The real thing: Debian's cloud kernel modules, as the boot test uses.
#[test]
fn debian_kernel_modules_resolve() {
    let Some(dir) = banger_testkit::kernel_dir() else {
        return;
    };
    let modules = std::fs::read_dir(Path::new(&dir).join("modules"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let names: Vec<String> = resolve(&modules, banger_initramfs::DEFAULT_MODULES)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    let pos = |n: &str| names.iter().position(|m| m == n);
    for n in ["virtio_blk", "virtio_console", "overlay"] {
        assert!(
            pos(n).is_some() || names.is_empty(),
            "{n} missing from {names:?}"
        );
    }
    if let (Some(v), Some(b)) = (pos("virtio"), pos("virtio_blk")) {
        assert!(v < b, "virtio must load before virtio_blk: {names:?}");
    }
}
