//! Kernel modules: writing `modules.dep` and planning what to load.
//!
//! Debian packages ship no `modules.dep` (their postinst runs `depmod`), and
//! banger should not need `depmod` on the host, so [`write_modules_dep`]
//! builds it from each module's `.modinfo` `depends=` list. [`ModuleIndex`]
//! reads it back with `modules.builtin` to tell the initramfs builder which
//! files to load, in order, for the modules it wants.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::KernelError;

/// What the initramfs must do to get a set of modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePlan {
    /// Module files to load, dependencies first; absolute paths.
    pub load_order: Vec<PathBuf>,
    /// Requested modules that are built into the kernel: nothing to load.
    pub builtin: Vec<String>,
}

/// `modules.dep` and `modules.builtin` of one `lib/modules/<release>`.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// Module name → (file, its dependencies as modules.dep lists them).
    deps: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// `kernel/fs/overlayfs/overlay.ko.xz` → `overlay`; the kernel treats `-`
/// and `_` in module names alike and reports `_`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split_once(".ko")?.0;
    Some(stem.replace('-', "_"))
}

fn is_module_file(name: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

impl ModuleIndex {
    /// Reads `modules.dep` (required) and `modules.builtin` (optional) in
    /// `modules_dir`.
    pub fn load(modules_dir: &Path) -> Result<ModuleIndex, KernelError> {
        let dep_path = modules_dir.join("modules.dep");
        let text = fs::read_to_string(&dep_path).map_err(KernelError::io("read", &dep_path))?;
        let mut deps = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (file, rest) = line.split_once(':').ok_or_else(|| KernelError::BadModule {
                path: dep_path.clone(),
                reason: format!("malformed line {line:?}"),
            })?;
            let Some(name) = module_name(file) else {
                continue;
            };
            let list = rest.split_whitespace().map(str::to_string).collect();
            deps.insert(name, (file.to_string(), list));
        }
        let builtin_path = modules_dir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_path) {
            Ok(text) => text.lines().filter_map(module_name).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(KernelError::io("read", &builtin_path)(e)),
        };
        Ok(ModuleIndex {
            dir: modules_dir.to_path_buf(),
            deps,
            builtin,
        })
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// The module file for `name`, if it is a loadable module.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        let (file, _) = self.deps.get(&name.replace('-', "_"))?;
        Some(self.dir.join(file))
    }

    /// Direct and indirect dependencies of `name` as modules.dep lists them
    /// (load them from last to first), relative to the modules directory.
    pub fn dependencies(&self, name: &str) -> Option<&[String]> {
        self.deps
            .get(&name.replace('-', "_"))
            .map(|(_, d)| d.as_slice())
    }

    /// The files to load, in order, to get all of `names`.
    pub fn plan(&self, names: &[&str]) -> Result<ModulePlan, KernelError> {
        let mut load_order: Vec<PathBuf> = Vec::new();
        let mut builtin = Vec::new();
        for name in names {
            let key = name.replace('-', "_");
            if self.builtin.contains(&key) {
                builtin.push(key);
                continue;
            }
            let (file, deps) = self
                .deps
                .get(&key)
                .ok_or_else(|| KernelError::UnknownModule {
                    name: (*name).to_string(),
                    modules_dir: self.dir.clone(),
                })?;
            // modules.dep lists what modprobe loads last-to-first; keeping
            // only the first occurrence of each file keeps every module
            // after its dependencies.
            for rel in deps.iter().rev().chain(std::iter::once(file)) {
                let path = self.dir.join(rel);
                if !load_order.contains(&path) {
                    load_order.push(path);
                }
            }
        }
        Ok(ModulePlan {
            load_order,
            builtin,
        })
    }
}

/// Writes `modules_dir/modules.dep` from the modules' own `depends=` lists,
/// in depmod's format: `file: deps...` with each module's whole dependency
/// closure, ordered so that loading from last to first works.
pub fn write_modules_dep(modules_dir: &Path) -> Result<(), KernelError> {
    let mut files = Vec::new();
    collect_modules(modules_dir, modules_dir, &mut files)?;
    files.sort();

    // name → (relative file, direct dependency names)
    let mut direct: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for rel in files {
        let path = modules_dir.join(&rel);
        let Some(name) = module_name(&rel) else {
            continue;
        };
        let info = read_modinfo(&path)?;
        let depends = info
            .iter()
            .find_map(|kv| kv.strip_prefix("depends="))
            .unwrap_or("")
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.replace('-', "_"))
            .collect();
        direct.insert(name, (rel, depends));
    }

    let mut out = String::new();
    for (name, (rel, _)) in &direct {
        let mut load = Vec::new();
        let mut visiting = Vec::new();
        visit(name, &direct, modules_dir, &mut load, &mut visiting)?;
        // `load` ends with the module itself; modules.dep wants the others
        // reversed (last = first to load).
        load.pop();
        out.push_str(rel);
        out.push(':');
        for dep in load.iter().rev() {
            out.push(' ');
            out.push_str(&direct[dep].0);
        }
        out.push('\n');
    }
    let dep_path = modules_dir.join("modules.dep");
    fs::write(&dep_path, out).map_err(KernelError::io("write", &dep_path))
}

/// Post-order walk: pushes `name`'s dependencies, then `name`, onto `load`.
fn visit(
    name: &str,
    direct: &BTreeMap<String, (String, Vec<String>)>,
    dir: &Path,
    load: &mut Vec<String>,
    visiting: &mut Vec<String>,
) -> Result<(), KernelError> {
    if load.iter().any(|l| l == name) {
        return Ok(());
    }
    let Some((rel, deps)) = direct.get(name) else {
        let by = visiting.last().cloned().unwrap_or_default();
        let path = direct
            .get(&by)
            .map(|(r, _)| dir.join(r))
            .unwrap_or_else(|| dir.to_path_buf());
        return Err(KernelError::BadModule {
            path,
            reason: format!("depends on missing module {name}"),
        });
    };
    if visiting.iter().any(|v| v == name) {
        return Err(KernelError::BadModule {
            path: dir.join(rel),
            reason: format!("dependency cycle through {name}"),
        });
    }
    visiting.push(name.to_string());
    for dep in deps {
        visit(dep, direct, dir, load, visiting)?;
    }
    visiting.pop();
    load.push(name.to_string());
    Ok(())
}

/// Relative paths (with `/`) of every module file below `dir`. Symlinks are
/// not followed: modules are regular files.
fn collect_modules(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), KernelError> {
    for entry in fs::read_dir(dir).map_err(KernelError::io("read directory", dir))? {
        let entry = entry.map_err(KernelError::io("read directory", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(KernelError::io("stat", &path))?;
        if kind.is_dir() {
            collect_modules(root, &path, out)?;
        } else if kind.is_file() && is_module_file(&entry.file_name().to_string_lossy()) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The `key=value` strings of a module's `.modinfo` ELF section.
fn read_modinfo(path: &Path) -> Result<Vec<String>, KernelError> {
    let file = File::open(path).map_err(KernelError::io("open", path))?;
    let name = path.to_string_lossy();
    let mut bytes = Vec::new();
    let read = if name.ends_with(".xz") {
        xz2::read::XzDecoder::new_multi_decoder(file).read_to_end(&mut bytes)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut bytes))
    } else if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        { file }.read_to_end(&mut bytes)
    };
    read.map_err(KernelError::io("read", path))?;
    let section = elf_section(&bytes, b".modinfo").map_err(|reason| KernelError::BadModule {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    })?;
    Ok(section
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// The contents of the section called `want` in a little-endian ELF64 file
/// (x86-64 modules are nothing else).
fn elf_section<'a>(elf: &'a [u8], want: &[u8]) -> Result<&'a [u8], &'static str> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let usize_at = |o: usize| u64_at(o).and_then(|v| usize::try_from(v).ok());
    const TRUNCATED: &str = "truncated elf";

    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an elf file");
    }
    if elf.get(4..6) != Some(&[2, 1]) {
        return Err("not a little-endian elf64 file");
    }
    let shoff = usize_at(0x28).ok_or(TRUNCATED)?;
    let shentsize = usize::from(u16_at(0x3A).ok_or(TRUNCATED)?);
    let shnum = usize::from(u16_at(0x3C).ok_or(TRUNCATED)?);
    let shstrndx = usize::from(u16_at(0x3E).ok_or(TRUNCATED)?);
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = usize::try_from(u32_at(base)?).ok()?;
        Some((name, usize_at(base + 0x18)?, usize_at(base + 0x20)?))
    };
    let data = |off: usize, size: usize| elf.get(off..off.checked_add(size)?);

    let (_, str_off, str_size) = header(shstrndx).ok_or(TRUNCATED)?;
    let names = data(str_off, str_size).ok_or(TRUNCATED)?;
    for i in 0..shnum {
        let (name, off, size) = header(i).ok_or(TRUNCATED)?;
        let Some(rest) = names.get(name..) else {
            continue;
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        if &rest[..end] == want {
            return data(off, size).ok_or(TRUNCATED);
        }
    }
    Err("no .modinfo section")
}

/// Writes kmod's binary indexes (`modules.dep.bin`, `modules.alias.bin`...)
/// into `modules_dir` (`.../<release>`) with the host's `depmod`, so a
/// guest's `modprobe` finds modules on a read-only tree: kmod reads only the
/// binary index. Returns false when `depmod` (kmod) is not installed.
pub fn index_modules(modules_dir: &Path) -> Result<bool, KernelError> {
    let Some(depmod) = ["/usr/sbin/depmod", "/sbin/depmod", "/usr/bin/depmod"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        return Ok(false);
    };
    let release = modules_dir
        .file_name()
        .and_then(|r| r.to_str())
        .ok_or_else(|| KernelError::BadModule {
            path: modules_dir.to_path_buf(),
            reason: "modules directory is not named after a release".to_string(),
        })?;
    // depmod -b BASE wants BASE/lib/modules/<release>: point one at ours.
    let base = tempfile::tempdir().map_err(KernelError::io(
        "create temporary directory for",
        modules_dir,
    ))?;
    let lib = base.path().join("lib/modules");
    fs::create_dir_all(&lib).map_err(KernelError::io("create", &lib))?;
    let abs = fs::canonicalize(modules_dir).map_err(KernelError::io("resolve", modules_dir))?;
    std::os::unix::fs::symlink(&abs, lib.join(release))
        .map_err(KernelError::io("create symlink", lib.join(release)))?;
    let out = std::process::Command::new(depmod)
        .arg("-b")
        .arg(base.path())
        .arg(release)
        .output()
        .map_err(KernelError::io("run", depmod))?;
    if !out.status.success() {
        return Err(KernelError::BadModule {
            path: modules_dir.to_path_buf(),
            reason: format!(
                "depmod failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; ")
            ),
        });
    }
    Ok(true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 relocatable with a `.modinfo` section holding
    /// `depends=<depends>`: all `write_modules_dep` reads.
    pub(crate) fn fake_module(name: &str, depends: &str) -> Vec<u8> {
        let modinfo = format!("license=GPL\0depends={depends}\0name={name}\0");
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little endian
        elf[6] = 1;
        let modinfo_off = elf.len();
        elf.extend_from_slice(modinfo.as_bytes());
        let strtab_off = elf.len();
        elf.extend_from_slice(shstrtab);
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        let section = |name: u32, off: usize, size: usize| {
            let mut sh = vec![0u8; 64];
            sh[..4].copy_from_slice(&name.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            sh
        };
        elf.extend(section(0, 0, 0));
        elf.extend(section(1, modinfo_off, modinfo.len()));
        elf.extend(section(10, strtab_off, shstrtab.len()));
        elf
    }

    fn put(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn modules_dep_lists_closure_and_plan_orders_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        put(
            d,
            "kernel/virtio/virtio_ring.ko",
            &fake_module("virtio_ring", ""),
        );
        put(
            d,
            "kernel/virtio/virtio.ko",
            &fake_module("virtio", "virtio_ring"),
        );
        put(
            d,
            "kernel/block/virtio_blk.ko",
            &fake_module("virtio_blk", "virtio,virtio_ring"),
        );
        put(
            d,
            "kernel/net/vmw_vsock_virtio_transport.ko",
            &fake_module("x", "vsock,virtio-ring"),
        );
        put(d, "kernel/net/vsock.ko", &fake_module("vsock", ""));
        put(d, "modules.builtin", b"kernel/fs/ext4/ext4.ko\n");
        write_modules_dep(d).unwrap();

        let dep = fs::read_to_string(d.join("modules.dep")).unwrap();
        assert!(
            dep.contains(
                "kernel/block/virtio_blk.ko: kernel/virtio/virtio.ko kernel/virtio/virtio_ring.ko\n"
            ),
            "{dep}"
        );
        assert!(dep.contains("kernel/virtio/virtio_ring.ko:\n"), "{dep}");

        let index = ModuleIndex::load(d).unwrap();
        assert!(index.is_builtin("ext4"));
        assert_eq!(
            index.path_of("virtio-blk"),
            Some(d.join("kernel/block/virtio_blk.ko"))
        );
        let plan = index
            .plan(&["ext4", "virtio_blk", "vmw_vsock_virtio_transport", "virtio"])
            .unwrap();
        assert_eq!(plan.builtin, vec!["ext4"]);
        let rel: Vec<_> = plan
            .load_order
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            rel,
            vec![
                "kernel/virtio/virtio_ring.ko",
                "kernel/virtio/virtio.ko",
                "kernel/block/virtio_blk.ko",
                "kernel/net/vsock.ko",
                "kernel/net/vmw_vsock_virtio_transport.ko",
            ]
        );
        let err = index.plan(&["nosuch"]).unwrap_err();
        assert!(matches!(err, KernelError::UnknownModule { .. }), "{err:?}");
    }

    #[test]
    fn missing_dependency_and_cycles_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "a.ko", &fake_module("a", "ghost"));
        let err = write_modules_dep(dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing module ghost"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "a.ko", &fake_module("a", "b"));
        put(dir.path(), "b.ko", &fake_module("b", "a"));
        let err = write_modules_dep(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "junk.ko", b"not an elf");
        let err = write_modules_dep(dir.path()).unwrap_err();
        assert!(matches!(err, KernelError::BadModule { .. }), "{err:?}");
    }
}
