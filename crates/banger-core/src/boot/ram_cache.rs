//! The boot templates' sealed RAM images the daemon holds, and when it lets
//! them go.
//!
//! A warm start maps its template's RAM from a sealed memfd
//! ([`SealedRam`]); every VM of one template maps the same one, so pages
//! no guest wrote are in host memory once. The daemon holds each image it
//! loaded while a running VM maps it (each run holds its own reference
//! until its VMM is gone: stop, suspend, crash), and for [`KEEP`] after
//! the last such run ended, so back-to-back runs do not load it again.
//! Past that, the image goes: VMs that all sleep (suspended: their
//! guests are saved whole, not mapped) or that are all gone cost the host
//! nothing for their template, and the next warm start loads it again
//! from the template's file (the page cache's copy when it is still
//! there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use banger_vmm::ram::SealedRam;

/// How long an image no running VM maps is kept for the next warm start.
pub const KEEP: Duration = Duration::from_secs(30);

/// One loaded image: the inode of the RAM file it came from (a template
/// made again at the same path is a new file), and since when no run has
/// held it.
struct Entry {
    ino: u64,
    ram: Arc<SealedRam>,
    unheld_since: Option<Instant>,
}

/// The images by template directory, and the one each running VM maps.
#[derive(Default)]
pub struct RamCache {
    images: Mutex<HashMap<PathBuf, Entry>>,
    runs: Mutex<HashMap<String, Arc<SealedRam>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RamCache {
    /// The image of the template in `dir` (RAM file inode `ino`), loaded
    /// with `load` if it is not held already.
    pub fn get_or_load<E>(
        &self,
        dir: &Path,
        ino: u64,
        load: impl FnOnce() -> Result<SealedRam, E>,
    ) -> Result<Arc<SealedRam>, E> {
        let mut images = lock(&self.images);
        if let Some(e) = images.get_mut(dir)
            && e.ino == ino
        {
            e.unheld_since = None;
            return Ok(e.ram.clone());
        }
        let ram = Arc::new(load()?);
        images.insert(
            dir.to_path_buf(),
            Entry {
                ino,
                ram: ram.clone(),
                unheld_since: None,
            },
        );
        Ok(ram)
    }

    /// The VM with id `vm` runs on `ram` (its VMM maps it).
    pub fn hold(&self, vm: &str, ram: Arc<SealedRam>) {
        lock(&self.runs).insert(vm.to_string(), ram);
    }

    /// The VM with id `vm` no longer runs (its VMM is gone).
    pub fn release(&self, vm: &str) {
        lock(&self.runs).remove(vm);
    }

    /// Forgets the image of the template in `dir` (a template dropped).
    pub fn remove(&self, dir: &Path) {
        lock(&self.images).remove(dir);
    }

    /// Lets go of the images no run has held for [`KEEP`] at `now`;
    /// returns how many bytes of data that gave back.
    pub fn sweep(&self, now: Instant) -> u64 {
        let mut freed = 0;
        lock(&self.images).retain(|_, e| {
            // One reference is ours; any other is a run's, or a start's
            // that is spawning its VMM now.
            if Arc::strong_count(&e.ram) > 1 {
                e.unheld_since = None;
                return true;
            }
            let since = *e.unheld_since.get_or_insert(now);
            let keep = now.saturating_duration_since(since) < KEEP;
            if !keep {
                freed += e.ram.data_bytes();
            }
            keep
        });
        freed
    }

    /// Template images held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.images).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path) -> SealedRam {
        let f = dir.join("ram");
        std::fs::write(&f, vec![7u8; 8192]).unwrap();
        SealedRam::load(&f).unwrap()
    }

    #[test]
    fn an_image_goes_only_once_no_run_has_held_it_for_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let c = RamCache::default();
        let t0 = Instant::now();
        let ram = c
            .get_or_load(tmp.path(), 1, || Ok::<_, ()>(image(tmp.path())))
            .unwrap();
        c.hold("vm1", ram);
        // Held by a run: kept however long.
        assert_eq!(c.sweep(t0 + KEEP * 10), 0);
        assert_eq!(c.held(), 1);
        // The same image for the next start, not a second load.
        let again = c
            .get_or_load(tmp.path(), 1, || Err::<SealedRam, _>("loaded twice"))
            .unwrap();
        drop(again);
        c.release("vm1");
        // Unheld: kept for KEEP from the first sweep that saw it so.
        let t1 = t0 + KEEP * 11;
        assert_eq!(c.sweep(t1), 0);
        assert_eq!(c.sweep(t1 + KEEP / 2), 0);
        assert_eq!(c.held(), 1);
        assert_eq!(c.sweep(t1 + KEEP), 8192);
        assert_eq!(c.held(), 0);
        // A start after that loads it again.
        let mut loaded = false;
        c.get_or_load(tmp.path(), 1, || {
            loaded = true;
            Ok::<_, ()>(image(tmp.path()))
        })
        .unwrap();
        assert!(loaded);
    }

    #[test]
    fn a_remade_template_is_loaded_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let c = RamCache::default();
        c.get_or_load(tmp.path(), 1, || Ok::<_, ()>(image(tmp.path())))
            .unwrap();
        let mut loaded = false;
        c.get_or_load(tmp.path(), 2, || {
            loaded = true;
            Ok::<_, ()>(image(tmp.path()))
        })
        .unwrap();
        assert!(loaded, "a new inode is a new template");
        c.remove(tmp.path());
        assert_eq!(c.held(), 0);
    }
}
