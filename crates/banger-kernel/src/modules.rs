//! Kernel modules: the one index of a module tree ([`ModuleIndex`]: files,
//! built-ins, dependencies read from each module's own `.modinfo`, and the
//! load order of a set of modules), `modules.dep` written from it (Debian
//! packages ship none), and kmod's binary indexes from the host's `depmod`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::KernelError;

/// What the initramfs must do to get a set of modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePlan {
    /// Module files to load, dependencies first; absolute paths.
    pub load_order: Vec<PathBuf>,
    /// Requested modules that are built into the kernel: nothing to load.
    pub builtin: Vec<String>,
}

/// The modules of one `lib/modules/<release>` tree: which names are
/// files, which are built in (`modules.builtin`), and, read from each
/// file's own `.modinfo` when first asked, what each depends on. The one
/// index both the initramfs builder and kernel import use.
#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// Module name → its file, relative to `dir` (possibly compressed).
    files: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
    /// Direct dependencies, as each module's `.modinfo` lists them, once read.
    depends: Mutex<BTreeMap<String, Vec<String>>>,
}

/// `kernel/fs/overlayfs/overlay.ko.xz` → `overlay`; the kernel treats `-`
/// and `_` in module names alike and reports `_`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(normalize(stem))
}

/// Module names use `-` and `_` interchangeably; the kernel compares them
/// as equal.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn is_module_file(name: &str) -> bool {
    module_name(name).is_some()
}

impl ModuleIndex {
    /// Indexes `modules_dir` (`.../lib/modules/<release>`): its module
    /// files and `modules.builtin` (optional). Nothing is decompressed yet.
    pub fn open(modules_dir: &Path) -> Result<ModuleIndex, KernelError> {
        let mut rels = Vec::new();
        collect_modules(modules_dir, modules_dir, &mut rels)?;
        let files = rels
            .into_iter()
            .filter_map(|rel| Some((module_name(&rel)?, rel)))
            .collect();
        let builtin_path = modules_dir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_path) {
            Ok(text) => text.lines().filter_map(module_name).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(KernelError::io("read", &builtin_path)(e)),
        };
        Ok(ModuleIndex {
            dir: modules_dir.to_path_buf(),
            files,
            builtin,
            depends: Mutex::new(BTreeMap::new()),
        })
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Whether `name` is a loadable module of this tree.
    pub fn has_module(&self, name: &str) -> bool {
        self.files.contains_key(&normalize(name))
    }

    /// The module file for `name`, if it is a loadable module.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.join(self.files.get(&normalize(name))?))
    }

    /// The module's file relative to the tree, always ending in `.ko` (the
    /// name it has once decompressed).
    pub fn ko_path(&self, name: &str) -> Option<String> {
        let rel = self.files.get(&normalize(name))?;
        Some(
            rel.find(".ko")
                .map_or(rel.clone(), |i| rel[..i + 3].to_string()),
        )
    }

    /// The module object, decompressed.
    pub fn contents(&self, name: &str) -> Result<Vec<u8>, KernelError> {
        let path = self
            .path_of(name)
            .ok_or_else(|| KernelError::UnknownModule {
                name: name.to_string(),
                modules_dir: self.dir.clone(),
            })?;
        read_module(&path)
    }

    /// What `name` depends on directly, from its `.modinfo`.
    fn direct_dependencies(&self, name: &str) -> Result<Vec<String>, KernelError> {
        let memo = |m: &Mutex<BTreeMap<String, Vec<String>>>| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned()
        };
        if let Some(deps) = memo(&self.depends) {
            return Ok(deps);
        }
        let path = self.path_of(name).unwrap_or_else(|| self.dir.clone());
        let info = modinfo(&self.contents(name)?).map_err(|reason| KernelError::BadModule {
            path,
            reason: reason.to_string(),
        })?;
        let deps: Vec<String> = info
            .iter()
            .find_map(|kv| kv.strip_prefix("depends="))
            .unwrap_or("")
            .split(',')
            .filter(|d| !d.is_empty())
            .map(normalize)
            .collect();
        self.depends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), deps.clone());
        Ok(deps)
    }

    /// The modules to load, in order, to get all of `wanted`: each after its
    /// dependencies, built-in ones left out. A wanted name that is neither
    /// a file nor built in, a dependency missing from the tree and a cycle
    /// are errors.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>, KernelError> {
        let mut load = Vec::new();
        for name in wanted {
            let name = normalize(name);
            if self.builtin.contains(&name) {
                continue;
            }
            if !self.files.contains_key(&name) {
                return Err(KernelError::UnknownModule {
                    name,
                    modules_dir: self.dir.clone(),
                });
            }
            self.visit(&name, &mut load, &mut Vec::new())?;
        }
        Ok(load)
    }

    /// Post-order walk: pushes `name`'s dependencies, then `name`, onto
    /// `load`.
    fn visit(
        &self,
        name: &str,
        load: &mut Vec<String>,
        visiting: &mut Vec<String>,
    ) -> Result<(), KernelError> {
        if load.iter().any(|l| l == name) || self.builtin.contains(name) {
            return Ok(());
        }
        if !self.files.contains_key(name) {
            let by = visiting.last().cloned().unwrap_or_default();
            return Err(KernelError::BadModule {
                path: self.path_of(&by).unwrap_or_else(|| self.dir.clone()),
                reason: format!("depends on missing module {name}"),
            });
        }
        if visiting.iter().any(|v| v == name) {
            return Err(KernelError::BadModule {
                path: self.path_of(name).unwrap_or_else(|| self.dir.clone()),
                reason: format!("dependency cycle through {name}"),
            });
        }
        visiting.push(name.to_string());
        for dep in self.direct_dependencies(name)? {
            self.visit(&dep, load, visiting)?;
        }
        visiting.pop();
        load.push(name.to_string());
        Ok(())
    }

    /// The files to load, in order, to get all of `names`, and which of
    /// them are built in.
    pub fn plan(&self, names: &[&str]) -> Result<ModulePlan, KernelError> {
        let load_order = self
            .load_order(names)?
            .iter()
            .filter_map(|n| self.path_of(n))
            .collect();
        let builtin = names
            .iter()
            .map(|n| normalize(n))
            .filter(|n| self.builtin.contains(n))
            .collect();
        Ok(ModulePlan {
            load_order,
            builtin,
        })
    }
}

/// Writes `modules_dir/modules.dep` in depmod's format (`file: deps...`,
/// each module's whole dependency closure, ordered so that loading from
/// last to first works), for a guest's busybox `modprobe`, which reads the
/// text file: Debian packages ship none (their postinst runs `depmod`).
pub fn write_modules_dep(modules_dir: &Path) -> Result<(), KernelError> {
    let index = ModuleIndex::open(modules_dir)?;
    let mut out = String::new();
    for (name, rel) in &index.files {
        let mut load = index.load_order(&[name])?;
        // `load` ends with the module itself; modules.dep wants the others
        // reversed (last = first to load).
        load.pop();
        out.push_str(rel);
        out.push(':');
        for dep in load.iter().rev() {
            out.push(' ');
            out.push_str(&index.files[dep]);
        }
        out.push('\n');
    }
    let dep_path = modules_dir.join("modules.dep");
    fs::write(&dep_path, out).map_err(KernelError::io("write", &dep_path))
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

/// A module file, decompressed.
fn read_module(path: &Path) -> Result<Vec<u8>, KernelError> {
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
    Ok(bytes)
}

/// The `key=value` strings of a module object's `.modinfo` ELF section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>, &'static str> {
    let section = elf_section(elf, b".modinfo")?;
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

        let index = ModuleIndex::open(d).unwrap();
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
