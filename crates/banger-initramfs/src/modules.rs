//! Finding kernel modules, their dependencies and load order.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{InitramfsError, Result};

/// A module picked for the archive, decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Module name (`_` form).
    pub name: String,
    /// Path relative to the release directory, always ending in `.ko`.
    pub rel_path: String,
    /// The uncompressed object.
    pub contents: Vec<u8>,
}

/// The modules of one kernel release directory.
#[derive(Debug)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// name -> path relative to `dir` (possibly compressed).
    files: HashMap<String, String>,
    builtin: HashSet<String>,
}

/// Module names use `-` and `_` interchangeably; the kernel compares them
/// as equal.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Name of a module file: basename without `.ko[.xz|.zst|.gz]`.
fn module_name(file: &str) -> Option<String> {
    let base = file.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))?;
    Some(normalize(stem))
}

impl ModuleIndex {
    /// Indexes `dir` (`lib/modules/<release>`).
    pub fn open(dir: &Path) -> Result<ModuleIndex> {
        let mut files = HashMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d).map_err(|source| InitramfsError::Read {
                path: d.clone(),
                source,
            })?;
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p.to_str().and_then(module_name) {
                    let rel = p
                        .strip_prefix(dir)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    files.insert(name, rel);
                }
            }
        }
        let builtin_path = dir.join("modules.builtin");
        let builtin = match fs::read_to_string(&builtin_path) {
            Ok(s) => s.lines().filter_map(module_name).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(source) => {
                return Err(InitramfsError::Read {
                    path: builtin_path,
                    source,
                });
            }
        };
        Ok(ModuleIndex {
            dir: dir.to_owned(),
            files,
            builtin,
        })
    }

    /// Whether `name` is a loadable module of this tree.
    pub fn has_module(&self, name: &str) -> bool {
        self.files.contains_key(&normalize(name))
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    fn load(&self, name: &str) -> Result<Option<ResolvedModule>> {
        let Some(rel) = self.files.get(name) else {
            return Ok(None);
        };
        let path = self.dir.join(rel);
        let raw = fs::read(&path).map_err(|source| InitramfsError::Read {
            path: path.clone(),
            source,
        })?;
        let dec = |r: &mut dyn Read| -> Result<Vec<u8>> {
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|source| InitramfsError::Decompress {
                    path: path.clone(),
                    source,
                })?;
            Ok(out)
        };
        let contents = if rel.ends_with(".xz") {
            dec(&mut xz2::read::XzDecoder::new(&raw[..]))?
        } else if rel.ends_with(".zst") {
            let mut d = zstd::stream::read::Decoder::new(&raw[..]).map_err(|source| {
                InitramfsError::Decompress {
                    path: path.clone(),
                    source,
                }
            })?;
            dec(&mut d)?
        } else if rel.ends_with(".gz") {
            dec(&mut flate2::read::GzDecoder::new(&raw[..]))?
        } else {
            raw
        };
        let ko = rel.find(".ko").map_or(rel.as_str(), |i| &rel[..i + 3]);
        Ok(Some(ResolvedModule {
            name: name.to_owned(),
            rel_path: ko.to_owned(),
            contents,
        }))
    }

    /// Resolves `wanted` plus dependencies, dependencies first. Built-in
    /// modules are dropped; a name that is neither a file nor built in is
    /// an error.
    pub fn resolve(&self, wanted: &[&str]) -> Result<Vec<ResolvedModule>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            self.visit(&normalize(w), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<ResolvedModule>,
    ) -> Result<()> {
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let Some(m) = self.load(name)? else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(InitramfsError::ModuleNotFound {
                name: name.to_owned(),
                dir: self.dir.clone(),
            });
        };
        let info = modinfo(&m.contents).map_err(|reason| InitramfsError::BadModule {
            path: self.dir.join(&m.rel_path),
            reason,
        })?;
        for dep in info
            .iter()
            .filter_map(|kv| kv.strip_prefix("depends="))
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            self.visit(&normalize(dep), seen, order)?;
        }
        order.push(m);
        Ok(())
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?)).ok()
}

/// The `key=value` strings of an ELF64 little-endian object's `.modinfo`.
pub(crate) fn modinfo(elf: &[u8]) -> Result<Vec<String>, &'static str> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file");
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not ELF64 little-endian");
    }
    let bad = "truncated section headers";
    let shoff = u64_at(elf, 0x28).ok_or(bad)?;
    let shentsize = usize::from(u16_at(elf, 0x3a).ok_or(bad)?);
    let shnum = usize::from(u16_at(elf, 0x3c).ok_or(bad)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e).ok_or(bad)?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(elf, h)?,
            u64_at(elf, h + 0x18)?,
            u64_at(elf, h + 0x20)?,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx).ok_or(bad)?;
    let strtab = elf
        .get(stroff..stroff.checked_add(strsize).ok_or(bad)?)
        .ok_or(bad)?;
    for i in 0..shnum {
        let (name, off, size) = section(i).ok_or(bad)?;
        let name = strtab.get(name as usize..).ok_or(bad)?;
        if name.starts_with(b".modinfo\0") {
            let data = elf.get(off..off.checked_add(size).ok_or(bad)?).ok_or(bad)?;
            return Ok(data
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    Err("no .modinfo section")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/a/virtio-blk.ko").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(module_name("x/overlay.ko.zst").as_deref(), Some("overlay"));
        assert_eq!(module_name("x/overlay.ko.xz").as_deref(), Some("overlay"));
        assert_eq!(module_name("modules.dep"), None);
    }

    #[test]
    fn modinfo_rejects_non_elf() {
        assert!(modinfo(b"hello").is_err());
        assert!(modinfo(b"\x7fELF\x02\x01").is_err());
    }
}
