//! The composition root: one [`Services`] per daemon, holding the config,
//! the store and the services. `open` wires them and clears what a crash
//! left in scratch; the operations routes call are `impl Services` in
//! `lifecycle.rs` and beside the service they coordinate.

use std::path::PathBuf;
use std::sync::Arc;

use banger_store::Store;

use crate::boot::BootService;
use crate::error::{CoreError, CoreResult, store_err};
use crate::images::ImageService;
use crate::kernels::KernelService;
use crate::scratch::remove_any;
use crate::tools::Tools;
use crate::vms::VmService;
use crate::{Config, Layout};

#[derive(Debug)]
pub struct Services {
    pub config: Arc<Config>,
    pub layout: Arc<Layout>,
    pub store: Arc<Store>,
    pub kernels: KernelService,
    pub images: ImageService,
    pub vms: VmService,
    pub boot: BootService,
    /// What each VM holds on the host while it runs (its NIC).
    pub resources: Arc<crate::resources::HostResources>,
    /// Which VMM runs VMs and why, for the log and `vm start`.
    pub vmm_choice: String,
    /// Restores read a snapshot under its lock; `snapshot rm` refuses then.
    pub(crate) snapshot_locks: crate::snapshots::locks::SnapshotLocks,
}

impl Services {
    /// Open the store (running migrations) and clear what operations
    /// interrupted by a crash left in the scratch directory.
    pub fn open(config: Config, tools: Tools) -> CoreResult<Services> {
        let layout = Arc::new(Layout::new(config.data_dir.clone()));
        layout
            .ensure()
            .map_err(|e| CoreError::invalid(e.to_string()))?;
        let store = Arc::new(Store::open(&layout.database()).map_err(store_err)?);
        let config = Arc::new(config);
        let (driver, vmm_choice) = crate::boot::select_driver(&config);
        let resources = Arc::new(crate::resources::HostResources::default());
        let services = Services {
            boot: BootService::new(
                config.clone(),
                layout.clone(),
                store.clone(),
                driver,
                tools.agent.clone(),
                resources.clone(),
            ),
            resources,
            vmm_choice,
            snapshot_locks: Default::default(),
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
    /// were being moved into or out of place when the daemon died. Both go,
    /// except an object a removal had moved to `tmp/` whose record is still
    /// there (the daemon died between the move and the delete): it moves
    /// back, whole, rather than leave a record with no files.
    fn clean_scratch(&self) {
        let tmp = self.layout.tmp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                if !self.undo_interrupted_removal(&e.path()) {
                    remove_any(&e.path());
                }
            }
        }
        self.vms.remove_orphans();
        self.images.remove_orphans();
        self.kernels.remove_orphans();
        self.reconcile_snapshots();
        self.vms.reconcile_known_hosts();
    }

    /// `trash` is `tmp/<label>-rm-<id>` ([`crate::scratch::remove_object`])
    /// of an object still recorded and missing from its place: put it back.
    fn undo_interrupted_removal(&self, trash: &std::path::Path) -> bool {
        let name = trash.file_name().unwrap_or_default().to_string_lossy();
        let Some((label, id)) = name.split_once("-rm-") else {
            return false;
        };
        let home = match label {
            "vm" => self.store.get_vm(id).ok().flatten().map(|v| v.dir.into()),
            "image" => self
                .store
                .get_image(id)
                .ok()
                .flatten()
                .map(|_| self.layout.image_dir(id)),
            "kernel" => self
                .store
                .get_kernel(id)
                .ok()
                .flatten()
                .map(|_| self.layout.kernel_dir(id)),
            "snapshot" => self
                .store
                .get_snapshot(id)
                .ok()
                .flatten()
                .map(|s| s.dir.into()),
            _ => None,
        };
        let Some(home): Option<PathBuf> = home else {
            return false;
        };
        let is_real_dir = std::fs::symlink_metadata(trash).is_ok_and(|m| m.is_dir());
        if !is_real_dir || home.exists() {
            return false;
        }
        match std::fs::rename(trash, &home) {
            Ok(()) => {
                tracing::info!(%label, %id, "an interrupted removal left the record: the files are back in place");
                true
            }
            Err(e) => {
                tracing::warn!(%label, %id, error = %e, "cannot put back the files of an interrupted removal");
                false
            }
        }
    }
}
