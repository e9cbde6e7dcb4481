//! The composition root: one [`Services`] per daemon, holding the config,
//! the store and the three services. Nothing here decides anything; it wires.

use std::path::PathBuf;
use std::sync::Arc;

use banger_api::Event;
use banger_store::Store;

use crate::error::{CoreResult, internal, store_err};
use crate::images::ImageService;
use crate::kernels::KernelService;
use crate::vms::VmService;
use crate::{Config, Layout};

/// Where a long operation reports its stages. The daemon forwards these to
/// the client as NDJSON; tests collect them.
pub type EventSink<'a> = &'a (dyn Fn(Event) + Send + Sync);

/// Emit a `stage` event.
pub fn stage(events: EventSink<'_>, stage: &str, detail: impl Into<String>) {
    events(Event::Stage {
        stage: stage.into(),
        detail: detail.into(),
    });
}

/// Companion executables the services run.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `banger-rootfs`: unpacks root filesystems under fakeroot.
    pub rootfs_worker: PathBuf,
}

impl Tools {
    /// Companions live beside the running executable (`cargo build` and
    /// `make install` both put them there); `PATH` is the fallback.
    pub fn beside_current_exe() -> Self {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()));
        let find = |name: &str| {
            dir.as_ref()
                .map(|d| d.join(name))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(name))
        };
        Self {
            rootfs_worker: find("banger-rootfs"),
        }
    }
}

#[derive(Debug)]
pub struct Services {
    pub config: Arc<Config>,
    pub layout: Arc<Layout>,
    pub store: Arc<Store>,
    pub kernels: KernelService,
    pub images: ImageService,
    pub vms: VmService,
}

impl Services {
    /// Open the store (running migrations) and clear what operations
    /// interrupted by a crash left in the scratch directory.
    pub fn open(config: Config, tools: Tools) -> CoreResult<Services> {
        let layout = Arc::new(Layout::new(config.data_dir.clone()));
        layout
            .ensure()
            .map_err(|e| internal(&format!("cannot create {}", layout.data_dir.display()), &e))?;
        let store = Arc::new(Store::open(&layout.database()).map_err(store_err)?);
        let config = Arc::new(config);
        let services = Services {
            kernels: KernelService::new(layout.clone(), store.clone()),
            images: ImageService::new(layout.clone(), store.clone(), tools.clone()),
            vms: VmService::new(config.clone(), layout.clone(), store.clone()),
            config,
            layout,
            store,
        };
        services.clean_scratch();
        Ok(services)
    }

    /// Anything under `tmp/` belongs to an operation that never finished;
    /// directories under `vms/`, `images/`, `kernels/` that no record names
    /// were being moved into or out of place when the daemon died. Both go.
    fn clean_scratch(&self) {
        let tmp = self.layout.tmp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                remove_any(&e.path());
            }
        }
        self.vms.remove_orphans();
        self.images.remove_orphans();
        self.kernels.remove_orphans();
    }
}

/// Remove a file or a directory tree, ignoring absence; used on cleanup
/// paths where the error has nowhere better to go than the log.
pub(crate) fn remove_any(path: &std::path::Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cleanup failed");
    }
}

/// Remove entries of `dir` whose name is not in `known`.
pub(crate) fn remove_unknown(dir: &std::path::Path, known: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !known.contains(&name) {
            tracing::info!(path = %e.path().display(), "removing leftover of an interrupted operation");
            remove_any(&e.path());
        }
    }
}

/// A scratch directory under `tmp/` removed on drop unless kept; every
/// create builds there and renames into place only when complete.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    pub fn new(layout: &Layout, label: &str) -> std::io::Result<Scratch> {
        let path = layout
            .tmp_dir()
            .join(format!("{label}-{}", crate::alloc::new_id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path, keep: false })
    }
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
    /// Move the scratch dir to `dest` (same filesystem) and stop owning it.
    pub fn persist(mut self, dest: &std::path::Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            remove_any(&self.path);
        }
    }
}

impl Services {
    /// Create a VM: resolve its image (named, configured default, or the only
    /// one) and kernel (named or default), then build it.
    pub fn create_vm(
        &self,
        req: &banger_api::VmCreateRequest,
        events: EventSink<'_>,
    ) -> CoreResult<banger_api::VmRecord> {
        let image = match req
            .image
            .as_deref()
            .or(self.config.default_image.as_deref())
        {
            Some(r) => self.images.get(r)?,
            None => {
                let mut all = self.images.list()?;
                match all.len() {
                    1 => all.remove(0),
                    0 => {
                        return Err(banger_api::ApiError::not_found(
                            "no images; import one with `banger image import`",
                        ));
                    }
                    _ => {
                        return Err(banger_api::ApiError::invalid(
                            "several images exist; name one, or set default_image in config.toml",
                        ));
                    }
                }
            }
        };
        let kernel = match req.kernel.as_deref() {
            Some(r) => self.kernels.get(r)?,
            None => self.kernels.default_kernel()?,
        };
        self.vms.create(req, &image, &kernel, events)
    }
}
