//! The composition root: one [`Services`] per daemon, holding the config,
//! the store and the services. `open` wires them and clears what a crash
//! left in scratch; the operations routes call are `impl Services` in
//! `lifecycle.rs` and beside the service they coordinate.

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
        self.reconcile_snapshots();
    }
}
