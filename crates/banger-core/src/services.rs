//! The composition root: one [`Services`] per daemon, holding the config,
//! the store and the services. `open` wires them and clears what a crash
//! left in scratch; the operations routes call are `impl Services` in
//! `lifecycle.rs` and beside the service they coordinate.

use std::path::PathBuf;
use std::sync::Arc;

use banger_api::{BinariesConfig, ConfigReply, EffectiveConfig, NetworkSettings, VmDefaultsConfig};
use banger_store::Store;

use crate::boot::BootService;
use crate::error::{CoreError, CoreResult, store_err};
use crate::images::ImageService;
use crate::kernels::KernelService;
use crate::scratch::remove_any;
use crate::tools::Tools;
use crate::vms::VmService;
use crate::{Config, Layout};

/// The daemon's one action surface: routes call its methods (here, in
/// `lifecycle.rs`, `registry.rs`, `guest.rs` and beside the services they
/// coordinate) and never reach the services behind it.
#[derive(Debug)]
pub struct Services {
    pub(crate) config: Arc<Config>,
    pub(crate) layout: Arc<Layout>,
    pub(crate) store: Arc<Store>,
    pub(crate) kernels: KernelService,
    pub(crate) images: ImageService,
    pub(crate) vms: VmService,
    pub(crate) boot: BootService,
    /// What each VM holds on the host while it runs (its NIC).
    pub(crate) resources: Arc<crate::resources::HostResources>,
    /// Which VMM runs VMs and why, for the log and `vm start`.
    pub(crate) vmm_choice: String,
    /// Restores read a snapshot under its lock; `snapshot rm` refuses then.
    pub(crate) snapshot_locks: crate::snapshots::locks::SnapshotLocks,
    /// Idle suspend: the monitor's view of each VM, suspended VMs' watches.
    pub(crate) idle: crate::idle::Idle,
    /// Work the daemon started on its own (boot templates made after a
    /// cold start): ended by [`Services::shutdown`].
    pub(crate) background: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
            idle: Default::default(),
            background: Default::default(),
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

impl Services {
    /// Ends the work the daemon started on its own before it exits: a
    /// boot template being made in the background is abandoned, its QEMU
    /// killed and its directory removed (else that QEMU would run on with
    /// no owner, whatever became of the data dir). VMs keep running.
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(
            &mut *self
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        for note in self.boot.end_template_work().await {
            tracing::info!("{note}");
        }
    }

    /// The data directory this daemon serves.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.layout.data_dir
    }

    /// Which VMM runs VMs here and why.
    pub fn vmm_choice(&self) -> &str {
        &self.vmm_choice
    }

    /// The effective configuration, as `GET /v1/config` answers it.
    pub fn config_reply(&self) -> ConfigReply {
        ConfigReply {
            path: crate::config::config_path().display().to_string(),
            toml: self.config.to_toml(),
            config: effective_config(&self.config),
        }
    }
}

/// The wire view of the daemon's configuration.
fn effective_config(c: &Config) -> EffectiveConfig {
    EffectiveConfig {
        data_dir: c.data_dir.display().to_string(),
        vmm: serde_json::to_value(c.vmm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        default_image: c.default_image.clone(),
        vm: VmDefaultsConfig {
            vcpus: c.vm.vcpus,
            memory_mib: c.vm.memory_mib,
            overlay_disk_size: c.vm.overlay_disk_size.0,
            work_disk_size: c.vm.work_disk_size.0,
        },
        network: NetworkSettings {
            mode: serde_json::to_value(c.network.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            bridge: c.network.bridge.clone(),
            bridge_cidr: c.network.bridge_cidr.to_string(),
            dns_upstreams: c
                .network
                .dns_upstreams
                .iter()
                .map(|d| d.to_string())
                .collect(),
            domain: c.network.domain.clone(),
            helper_socket: c
                .network
                .helper_socket
                .as_ref()
                .map(|p| p.display().to_string()),
        },
        binaries: BinariesConfig {
            firecracker: c.binaries.firecracker.clone(),
            qemu: c.binaries.qemu.clone(),
        },
    }
}
