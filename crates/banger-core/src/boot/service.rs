//! The [`BootService`] itself: what it holds and the small accessors its
//! other modules share. Each concern (driver choice, handles, agents,
//! launch, stop, reconcile, pause, snapshots, templates) adds its methods
//! from its own file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_api::{VmRecord, VmState};
use banger_proto::client::AgentClient;
use banger_store::Store;
use banger_vmm::{AnyDriver, Driver, VmHandles, VmmKind};

use crate::error::{CoreError, CoreResult, chain, store_err};
use crate::paths::vm_files;
use crate::resources::HostResources;
use crate::{Config, Layout, now_rfc3339};

/// How long a booting guest may take to answer. TCG boots take seconds;
/// a minute covers a loaded CI machine.
pub(crate) const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `vm stop` waits for a clean shutdown before killing the VMM.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Serializes template making: one boot per shape, and concurrent starts
/// that want the same template wait for it instead of booting another.
pub(super) type TemplateLock = Arc<tokio::sync::Mutex<()>>;

/// A VM's agent connection, or none yet; its lock serializes connecting.
pub(super) type AgentSlot = Arc<tokio::sync::Mutex<Option<Arc<AgentClient>>>>;

pub struct BootService {
    pub(super) config: Arc<Config>,
    pub(super) layout: Arc<Layout>,
    pub(super) store: Arc<Store>,
    pub(super) driver: AnyDriver,
    pub(super) agent_bin: PathBuf,
    pub(super) resources: Arc<HostResources>,
    pub(super) handles: Mutex<HashMap<String, VmHandles>>,
    /// One slot per VM: connecting to one VM's agent (up to seconds when
    /// its guest is stuck) holds only that VM's slot, never the others'.
    pub(super) agents: Mutex<HashMap<String, AgentSlot>>,
    /// Initramfs per (kernel id, agent identity), so a start does not hash
    /// the agent and modules again.
    pub(super) initramfs: Mutex<HashMap<(String, String), PathBuf>>,
    /// Held while an initramfs is built.
    pub(super) initramfs_build: Mutex<()>,
    /// Held while a boot template is made.
    pub(super) template_lock: TemplateLock,
    /// Why a running VM's agent was cut off, per VM id (`agent.rs`).
    pub(super) agent_faults: Arc<Mutex<HashMap<String, String>>>,
    /// Where VM cgroups are made here, or why none are (`confine.rs`).
    pub(super) cgroups: banger_vmm::cgroup::Cgroups,
    /// The sealed RAM images of the templates warm starts used, so VMs
    /// of one template map one copy, held while a VM maps them
    /// (`ram_cache.rs`).
    pub(super) template_ram: super::ram_cache::RamCache,
}

impl std::fmt::Debug for BootService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootService")
            .field("driver", &self.driver.kind())
            .field("agent_bin", &self.agent_bin)
            .finish_non_exhaustive()
    }
}

pub(super) fn vmm_err(context: &str, e: &banger_vmm::VmmError) -> CoreError {
    CoreError::internal(format!("{context}: {}", chain(e)))
}

impl BootService {
    pub fn new(
        config: Arc<Config>,
        layout: Arc<Layout>,
        store: Arc<Store>,
        driver: AnyDriver,
        agent_bin: PathBuf,
        resources: Arc<HostResources>,
    ) -> Self {
        Self {
            config,
            layout,
            store,
            driver,
            agent_bin,
            resources,
            handles: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            initramfs: Mutex::new(HashMap::new()),
            initramfs_build: Mutex::new(()),
            template_lock: TemplateLock::default(),
            agent_faults: Arc::default(),
            cgroups: banger_vmm::cgroup::Cgroups::detect(),
            template_ram: Default::default(),
        }
    }

    /// The TCG translation cache cap of `[vm] tcg_translation_cache`.
    pub(super) fn tcg_cache_mib(&self) -> Option<u32> {
        self.config
            .vm
            .tcg_translation_cache
            .map(|b| u32::try_from(b.0 >> 20).unwrap_or(u32::MAX))
    }

    /// Whether VMMs here take their tap as a descriptor.
    pub fn takes_tap_fd(&self) -> bool {
        self.driver.takes_tap_fd()
    }

    /// The VMM new VMs start under.
    pub fn vmm(&self) -> VmmKind {
        self.driver.kind()
    }

    /// Whether this driver's saved states load with a VM's disks at new
    /// paths (restore as a new VM, fork, templates): QEMU, and
    /// Firecracker when jailed.
    pub fn restores_to_new_paths(&self) -> bool {
        self.driver.restores_to_new_paths()
    }

    pub(super) fn run_dir(&self, id: &str) -> PathBuf {
        self.layout.runtime_dir.join("vms").join(id)
    }

    pub fn console_log(vm: &VmRecord) -> PathBuf {
        Path::new(&vm.dir).join(vm_files::CONSOLE_LOG)
    }

    /// Whether `vm` runs with a NIC here: host networking is on and the VM
    /// does not ask for none (what the start's NIC acquisition decides).
    pub fn has_nic(&self, vm: &VmRecord) -> bool {
        vm.network != banger_api::VmNetwork::None && self.resources.network().is_active()
    }

    pub(super) fn set_state(&self, vm: &mut VmRecord, state: VmState) -> CoreResult<()> {
        vm.desired_state = state;
        vm.updated_at = now_rfc3339();
        self.store.update_vm(vm).map_err(store_err)
    }
}
