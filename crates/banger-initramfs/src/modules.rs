//! The modules an initramfs carries: resolved through banger-kernel's
//! [`ModuleIndex`] (the one index of a module tree) and decompressed.

use std::path::Path;

use banger_kernel::ModuleIndex;

use crate::Result;

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

/// `wanted` plus their dependencies from the tree at `dir`, dependencies
/// first, decompressed. Built-in modules are dropped; a name that is
/// neither a file nor built in is an error.
pub fn resolve(dir: &Path, wanted: &[&str]) -> Result<Vec<ResolvedModule>> {
    let index = ModuleIndex::open(dir)?;
    let mut out = Vec::new();
    for name in index.load_order(wanted)? {
        out.push(ResolvedModule {
            rel_path: index.ko_path(&name).unwrap_or_default(),
            contents: index.contents(&name)?,
            name,
        });
    }
    Ok(out)
}
