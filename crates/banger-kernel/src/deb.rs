//! Importing a Debian `linux-image-*` package.
//!
//! A .deb is an `ar` archive: `debian-binary`, `control.tar.*`, then
//! `data.tar.{xz,zst,gz}`. Only data.tar matters; it is streamed through its
//! decoder once and only the kernel, its config and its modules are written.
//! Nothing the package says is trusted: every entry path is checked to stay
//! inside the destination, and symlinks are kept only when they are relative
//! and resolve inside it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use crate::derive::describe;
use crate::modules::write_modules_dep;
use crate::probe::{KernelFormat, probe};
use crate::staging::Staging;
use crate::{ImportedKernel, KernelError};

/// Where a package entry goes inside the destination.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `boot/vmlinuz-<release>` → `vmlinuz`
    Kernel { release: String },
    /// `boot/config-<release>` → `config`
    Config,
    /// `[usr/]lib/modules/<release>/<rest>` → `modules/<release>/<rest>`
    Module { release: String, rel: PathBuf },
}

impl Target {
    fn dest(&self) -> PathBuf {
        match self {
            Target::Kernel { .. } => PathBuf::from("vmlinuz"),
            Target::Config => PathBuf::from("config"),
            Target::Module { release, rel } => Path::new("modules").join(release).join(rel),
        }
    }
}

/// Extracts the kernel, config and modules of the Debian package `deb` into
/// the new directory `dest_dir`. Writes `modules.dep` when the package ships
/// none (Debian's do not: `depmod` runs in their postinst).
pub fn import_deb(deb: &Path, dest_dir: &Path) -> Result<ImportedKernel, KernelError> {
    let bad = |reason: &str| KernelError::BadPackage {
        path: deb.to_path_buf(),
        reason: reason.to_string(),
    };
    let file = crate::probe::open_regular(deb)?;
    let mut archive = ar::Archive::new(file);
    let staging = Staging::new(dest_dir)?;

    let mut first = true;
    let mut extracted = None;
    while let Some(member) = archive.next_entry() {
        let mut member = member.map_err(|e| bad(&format!("ar archive: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        if first {
            let mut version = String::new();
            if name != "debian-binary"
                || member.read_to_string(&mut version).is_err()
                || !version.starts_with("2.")
            {
                return Err(bad("first member is not debian-binary 2.x"));
            }
            first = false;
            continue;
        }
        let decoded: Box<dyn Read + '_> = match name.as_str() {
            "data.tar" => Box::new(member),
            "data.tar.xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(member)),
            "data.tar.gz" => Box::new(flate2::read::MultiGzDecoder::new(member)),
            "data.tar.zst" => Box::new(
                zstd::stream::read::Decoder::new(member)
                    .map_err(KernelError::io("decompress", deb))?,
            ),
            other if other.starts_with("data.tar") => {
                return Err(bad(&format!("unsupported compression {other}")));
            }
            _ => continue,
        };
        extracted = Some(extract(deb, decoded, staging.path())?);
        break;
    }
    if first {
        return Err(bad("not an ar archive with debian-binary"));
    }
    let Some(found) = extracted else {
        return Err(bad("no data.tar member"));
    };

    let Some(name_release) = found.kernel_release else {
        return Err(KernelError::NotAKernelPackage {
            path: deb.to_path_buf(),
        });
    };
    let kernel_path = staging.path().join("vmlinuz");
    let info = probe(&kernel_path)?;
    // The header is the kernel's own word; the file name is packaging.
    let release = info.release.clone().unwrap_or(name_release);
    if info.format != KernelFormat::BzImage {
        return Err(KernelError::NotAKernel {
            path: deb.to_path_buf(),
            reason: "boot/vmlinuz-* is not a bzImage".to_string(),
        });
    }

    let modules_rel = match found.module_releases.as_slice() {
        [] => None,
        [only] if *only == release => {
            let rel = Path::new("modules").join(only);
            let dir = staging.path().join(&rel);
            if !dir.join("modules.dep").is_file() {
                write_modules_dep(&dir)?;
            }
            Some(rel)
        }
        [only] => {
            return Err(KernelError::ReleaseMismatch {
                path: deb.to_path_buf(),
                kernel: release,
                modules: only.clone(),
            });
        }
        several => {
            return Err(bad(&format!(
                "modules for several releases: {}",
                several.join(", ")
            )));
        }
    };

    let imported = describe(
        &staging,
        info.format,
        None,
        modules_rel.as_deref(),
        Some(release),
    )?;
    staging.finish()?;
    Ok(imported)
}

/// What `extract` wrote.
#[derive(Debug, Default)]
struct Extracted {
    /// From `boot/vmlinuz-<release>`.
    kernel_release: Option<String>,
    /// Names of the `lib/modules/*` directories, sorted.
    module_releases: Vec<String>,
}

/// Streams a data.tar, writing the entries we keep under `root`.
fn extract(deb: &Path, data: impl Read, root: &Path) -> Result<Extracted, KernelError> {
    let tar_err = |e: io::Error| KernelError::BadPackage {
        path: deb.to_path_buf(),
        reason: format!("data.tar: {e}"),
    };
    let mut found = Extracted::default();
    let mut module_releases = HashSet::new();
    // Symlinks we created: nothing may be written through them, or a link
    // to `..` followed by an entry below it would escape `root`.
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut written: HashSet<PathBuf> = HashSet::new();

    let mut archive = tar::Archive::new(data);
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let unsafe_entry = || KernelError::UnsafeEntry {
            archive: deb.to_path_buf(),
            entry: raw.display().to_string(),
        };
        let clean = normalize(&raw).ok_or_else(unsafe_entry)?;
        let Some(target) = classify(&clean) else {
            continue;
        };
        let dest_rel = target.dest();
        if dest_rel.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(unsafe_entry());
        }
        let dest = root.join(&dest_rel);
        let kind = entry.header().entry_type();

        if kind.is_dir() {
            if let Target::Module { release, .. } = &target {
                module_releases.insert(release.clone());
            }
            fs::create_dir_all(&dest).map_err(KernelError::io("create", &dest))?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(KernelError::io("create", parent))?;
        }
        match (&target, kind) {
            (Target::Kernel { release }, k) if k.is_file() => {
                if found.kernel_release.is_some() {
                    return Err(KernelError::BadPackage {
                        path: deb.to_path_buf(),
                        reason: "more than one boot/vmlinuz-*".to_string(),
                    });
                }
                write_file(&mut entry, deb, &dest, 0o644)?;
                found.kernel_release = Some(release.clone());
            }
            (Target::Config, k) if k.is_file() => write_file(&mut entry, deb, &dest, 0o644)?,
            (Target::Module { release, .. }, k) if k.is_file() => {
                module_releases.insert(release.clone());
                let mode = entry.header().mode().map_err(tar_err)? & 0o755;
                write_file(&mut entry, deb, &dest, mode)?;
                written.insert(dest_rel);
            }
            (Target::Module { .. }, k) if k.is_symlink() => {
                let Some(link) = entry.link_name().map_err(tar_err)? else {
                    continue;
                };
                if link_stays_inside(&dest_rel, &link) {
                    symlink(&link, &dest).map_err(KernelError::io("create symlink", &dest))?;
                    links.insert(dest_rel);
                }
                // Absolute or escaping links (e.g. `build` pointing into
                // /usr/src) are meaningless inside the guest initramfs.
            }
            (Target::Module { .. }, k) if k.is_hard_link() => {
                // Hard links name another archive member; keep them only when
                // that member was extracted here.
                let Some(link) = entry.link_name().map_err(tar_err)? else {
                    continue;
                };
                let other = normalize(&link)
                    .and_then(|l| classify(&l))
                    .map(|t| t.dest())
                    .filter(|rel| written.contains(rel));
                if let Some(other) = other {
                    let src = root.join(&other);
                    fs::hard_link(&src, &dest).map_err(KernelError::io("link", &dest))?;
                    written.insert(dest_rel);
                }
            }
            // Devices, fifos and non-file kernels have no place here.
            _ => {}
        }
    }
    found.module_releases = module_releases.into_iter().collect();
    found.module_releases.sort();
    Ok(found)
}

/// The entry path without `.` components; `None` if it is absolute or has a
/// `..` anywhere (legitimate packages never do).
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn classify(path: &Path) -> Option<Target> {
    let parts: Vec<&OsStr> = path.iter().collect();
    let text = |p: &OsStr| p.to_str().map(str::to_string);
    match parts.as_slice() {
        [boot, file] if *boot == "boot" => {
            let file = file.to_str()?;
            if let Some(release) = file.strip_prefix("vmlinuz-") {
                Some(Target::Kernel {
                    release: release.to_string(),
                })
            } else if file.starts_with("config-") {
                Some(Target::Config)
            } else {
                None
            }
        }
        // Debian moved modules to /usr/lib/modules with merged /usr (trixie).
        [usr, lib, modules, release, rest @ ..]
            if *usr == "usr" && *lib == "lib" && *modules == "modules" =>
        {
            Some(Target::Module {
                release: text(release)?,
                rel: rest.iter().collect(),
            })
        }
        [lib, modules, release, rest @ ..] if *lib == "lib" && *modules == "modules" => {
            Some(Target::Module {
                release: text(release)?,
                rel: rest.iter().collect(),
            })
        }
        _ => None,
    }
}

/// Whether a symlink at `at` (relative to the destination root) pointing to
/// `target` resolves, lexically, to a path inside the root.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&OsStr> = at.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn write_file(
    from: &mut impl Read,
    archive: &Path,
    dest: &Path,
    mode: u32,
) -> Result<(), KernelError> {
    // create_new: never follow or overwrite something already there.
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)
        .map_err(KernelError::io("create", dest))?;
    // Reads and writes apart (not io::copy): a read that fails is the
    // package's fault (truncated, corrupt), a write that fails is ours.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(KernelError::BadPackage {
                    path: archive.to_path_buf(),
                    reason: format!(
                        "data.tar: reading {}: {e}",
                        dest.file_name().unwrap_or_default().to_string_lossy()
                    ),
                });
            }
        };
        io::Write::write_all(&mut out, &buf[..n]).map_err(KernelError::io("write", dest))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::tests::fake_module;
    use crate::probe::tests::fake_bzimage;

    enum Item<'a> {
        File(&'a str, Vec<u8>),
        Symlink(&'a str, &'a str),
    }

    /// A .deb whose data.tar.gz holds `items`. Paths are written into the
    /// raw header so `../` survives (the tar crate refuses to add them).
    fn build_deb(dir: &Path, items: &[Item<'_>]) -> PathBuf {
        let mut tar = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = tar::Header::new_gnu();
            let (path, data) = match item {
                Item::File(path, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    (path, data.as_slice())
                }
                Item::Symlink(path, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_link_name(target).unwrap();
                    (path, &[][..])
                }
            };
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_mode(0o644);
            h.set_cksum();
            tar.append(&h, data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let data = gz.finish().unwrap();

        let path = dir.join("pkg.deb");
        let mut deb = ar::Builder::new(fs::File::create(&path).unwrap());
        for (name, bytes) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", Vec::new()),
            ("data.tar.gz", data),
        ] {
            let header = ar::Header::new(name.as_bytes().to_vec(), bytes.len() as u64);
            deb.append(&header, bytes.as_slice()).unwrap();
        }
        path
    }

    const REL: &str = "6.1.0-9-test";

    fn kernel_items() -> Vec<Item<'static>> {
        vec![
            Item::File(
                "./boot/vmlinuz-6.1.0-9-test",
                fake_bzimage("6.1.0-9-test (nobody@test) #1 SMP"),
            ),
            Item::File("./boot/config-6.1.0-9-test", b"CONFIG_EXT4_FS=y\n".to_vec()),
            Item::File("./boot/System.map-6.1.0-9-test", b"ffff t x\n".to_vec()),
            Item::File(
                "./lib/modules/6.1.0-9-test/kernel/virtio_ring.ko",
                fake_module("virtio_ring", ""),
            ),
            Item::File(
                "./lib/modules/6.1.0-9-test/kernel/virtio.ko",
                fake_module("virtio", "virtio_ring"),
            ),
            Item::File(
                "./lib/modules/6.1.0-9-test/modules.builtin",
                b"kernel/fs/ext4/ext4.ko\n".to_vec(),
            ),
            Item::File("./usr/share/doc/x/copyright", b"GPL".to_vec()),
        ]
    }

    #[test]
    fn imports_synthetic_package_and_writes_modules_dep() {
        let dir = tempfile::tempdir().unwrap();
        let mut items = kernel_items();
        items.push(Item::Symlink(
            "./lib/modules/6.1.0-9-test/ring.ko",
            "kernel/virtio_ring.ko",
        ));
        items.push(Item::Symlink(
            "./lib/modules/6.1.0-9-test/build",
            "/usr/src/linux-headers-6.1.0-9-test",
        ));
        items.push(Item::Symlink(
            "./lib/modules/6.1.0-9-test/up",
            "../../../..",
        ));
        let deb = build_deb(dir.path(), &items);
        let dest = dir.path().join("kernels/k1");

        let k = import_deb(&deb, &dest).unwrap();
        assert_eq!(k.release.as_deref(), Some(REL));
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.kernel_path, dest.join("vmlinuz"));
        let modules = dest.join("modules").join(REL);
        assert_eq!(k.modules_path.as_deref(), Some(modules.as_path()));
        assert_eq!(
            fs::read(dest.join("config")).unwrap(),
            b"CONFIG_EXT4_FS=y\n"
        );
        let dep = fs::read_to_string(modules.join("modules.dep")).unwrap();
        assert!(
            dep.contains("kernel/virtio.ko: kernel/virtio_ring.ko\n"),
            "{dep}"
        );
        // The inside link is kept, the absolute and escaping ones are not.
        assert_eq!(
            fs::read_link(modules.join("ring.ko")).unwrap(),
            Path::new("kernel/virtio_ring.ko")
        );
        assert!(fs::symlink_metadata(modules.join("build")).is_err());
        assert!(fs::symlink_metadata(modules.join("up")).is_err());
        let mut top: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert_eq!(top, vec!["config", "modules", "vmlinuz"]);
    }

    #[test]
    fn parent_dir_entry_is_rejected_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut items = kernel_items();
        items.insert(
            1,
            Item::File(
                "./lib/modules/6.1.0-9-test/../../../../escaped",
                b"x".to_vec(),
            ),
        );
        let deb = build_deb(dir.path(), &items);
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let dest = out.join("a/b/k1");

        let err = import_deb(&deb, &dest).unwrap_err();
        assert!(matches!(err, KernelError::UnsafeEntry { .. }), "{err:?}");
        assert!(err.to_string().contains("escapes the destination"), "{err}");
        // Neither the target nor the escape landed anywhere.
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(out.join("a/b")).unwrap().count(), 0);
        for p in [
            dir.path().join("escaped"),
            out.join("escaped"),
            out.join("a/escaped"),
        ] {
            assert!(!p.exists(), "{}", p.display());
        }
    }

    #[test]
    fn writing_through_an_extracted_symlink_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut items = kernel_items();
        // `up` stays inside, but `up/kernel/..`-style nesting below a link
        // could leave the root once links chain; refuse any write below one.
        items.push(Item::Symlink("./lib/modules/6.1.0-9-test/sub", "kernel"));
        items.push(Item::File(
            "./lib/modules/6.1.0-9-test/sub/x.ko",
            b"x".to_vec(),
        ));
        let deb = build_deb(dir.path(), &items);
        let err = import_deb(&deb, &dir.path().join("k")).unwrap_err();
        assert!(matches!(err, KernelError::UnsafeEntry { .. }), "{err:?}");
        assert!(!dir.path().join("k").exists());
    }

    #[test]
    fn package_without_vmlinuz_explains_the_metapackage() {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(
            dir.path(),
            &[Item::File(
                "./usr/share/doc/linux-image-cloud-amd64/copyright",
                b"GPL".to_vec(),
            )],
        );
        let err = import_deb(&deb, &dir.path().join("k")).unwrap_err();
        assert!(
            matches!(err, KernelError::NotAKernelPackage { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("is not a kernel package: no boot/vmlinuz-*"),
            "{msg}"
        );
        assert!(msg.contains("linux-image-<version>-cloud-amd64"), "{msg}");
        assert!(!dir.path().join("k").exists());
    }

    #[test]
    fn release_mismatch_between_kernel_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(
            dir.path(),
            &[
                Item::File(
                    "./boot/vmlinuz-6.1.0-9-test",
                    fake_bzimage("6.1.0-9-test #1"),
                ),
                Item::File("./lib/modules/6.2.0/kernel/a.ko", fake_module("a", "")),
            ],
        );
        let err = import_deb(&deb, &dir.path().join("k")).unwrap_err();
        assert!(
            matches!(err, KernelError::ReleaseMismatch { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn not_a_deb_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.deb");
        fs::write(&junk, b"this is not an ar archive").unwrap();
        let err = import_deb(&junk, &dir.path().join("k")).unwrap_err();
        assert!(matches!(err, KernelError::BadPackage { .. }), "{err:?}");
        assert!(!dir.path().join("k").exists());

        let err = import_deb(&dir.path().join("missing.deb"), &dir.path().join("k")).unwrap_err();
        assert!(matches!(err, KernelError::Io { op: "open", .. }), "{err:?}");
    }

    #[test]
    fn classify_keeps_only_kernel_config_and_modules() {
        let t = |p: &str| classify(Path::new(p));
        assert_eq!(
            t("boot/vmlinuz-6.1.0-56-cloud-amd64"),
            Some(Target::Kernel {
                release: "6.1.0-56-cloud-amd64".into()
            })
        );
        assert_eq!(t("boot/config-6.1.0"), Some(Target::Config));
        assert_eq!(t("boot/System.map-6.1.0"), None);
        assert_eq!(t("usr/share/doc/x/changelog.gz"), None);
        let m = t("usr/lib/modules/6.12/kernel/fs/overlay.ko.xz").unwrap();
        assert_eq!(m.dest(), Path::new("modules/6.12/kernel/fs/overlay.ko.xz"));
        let m = t("lib/modules/6.1/modules.builtin").unwrap();
        assert_eq!(m.dest(), Path::new("modules/6.1/modules.builtin"));
        assert_eq!(t("lib/modules"), None);
    }

    #[test]
    fn normalize_rejects_escapes() {
        assert_eq!(
            normalize(Path::new("./boot/x")),
            Some(PathBuf::from("boot/x"))
        );
        assert_eq!(normalize(Path::new("./lib/../../etc/passwd")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn symlink_containment_is_lexical_from_the_link_dir() {
        let at = Path::new("modules/6.1/kernel/link");
        assert!(link_stays_inside(at, Path::new("../modules.dep")));
        assert!(link_stays_inside(at, Path::new("../../../config")));
        assert!(!link_stays_inside(at, Path::new("../../../../etc")));
        assert!(!link_stays_inside(at, Path::new("/usr/src/linux-headers")));
    }
}
