//! The composition root: one [`Services`] per daemon, holding the config,
//! the store and the three services. Nothing here decides anything; it wires.

use std::path::PathBuf;
use std::sync::Arc;

use banger_api::Event;
use banger_store::Store;

use crate::boot::BootService;
use crate::error::{CoreError, CoreResult, internal, store_err};
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
    /// The static `banger-agent`, /init of every VM's initramfs.
    pub agent: PathBuf,
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
            agent: std::env::var_os("BANGER_AGENT_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| find("banger-agent")),
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
    pub boot: BootService,
    /// What each VM holds on the host while it runs (its NIC).
    pub resources: Arc<crate::resources::HostResources>,
    /// Which VMM runs VMs and why, for the log and `vm start`.
    pub vmm_choice: String,
    /// Restores read a snapshot under its lock; `snapshot rm` refuses then.
    pub(crate) snapshot_locks: crate::snapshots::SnapshotLocks,
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

/// Remove an object's directory and its record so that a crash at any
/// point leaves either the whole object or nothing: the directory is moved
/// into scratch, the record deleted (the move is undone if that fails),
/// and only then are the files deleted.
pub(crate) fn remove_object(
    layout: &Layout,
    dir: &std::path::Path,
    label: &str,
    delete_record: impl FnOnce() -> Result<(), banger_store::StoreError>,
) -> CoreResult<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let trash = layout.tmp_dir().join(format!("{label}-rm-{name}"));
    if dir.exists() {
        std::fs::rename(dir, &trash)
            .map_err(|e| internal(&format!("cannot remove {}", dir.display()), &e))?;
    }
    if let Err(e) = delete_record() {
        let _ = std::fs::rename(&trash, dir);
        return Err(store_err(e));
    }
    remove_any(&trash);
    Ok(())
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
                        return Err(CoreError::not_found(
                            "no images; import one with `banger image import`",
                        ));
                    }
                    _ => {
                        return Err(CoreError::invalid(
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
        KernelService::ensure_bootable(&kernel, self.boot.driver_name())?;
        self.vms.create(req, &image, &kernel, events)
    }
}

/// Lifecycle operations on running VMs. Each holds the VM's lock for its
/// whole duration and re-reads the record under it.
impl Services {
    pub(crate) async fn locked_vm(
        &self,
        reference: &str,
    ) -> CoreResult<(banger_api::VmRecord, tokio::sync::OwnedMutexGuard<()>)> {
        let id = self.vms.get(reference)?.id;
        let guard = self.vms.vm_lock(&id).lock_owned().await;
        let vm = self
            .store
            .get_vm(&id)
            .map_err(store_err)?
            .ok_or_else(|| CoreError::not_found(format!("vm {reference:?} was removed")))?;
        Ok((vm, guard))
    }

    /// One VM as it is now (see [`Self::settled`]).
    pub async fn show_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let vm = tokio::task::block_in_place(|| self.vms.get(reference))?;
        Ok(self.with_network_note(self.settled(vm).await?))
    }

    /// Say why the VM has no NIC, when it has none.
    fn with_network_note(&self, mut vm: banger_api::VmRecord) -> banger_api::VmRecord {
        vm.no_network = self.resources.network().no_network_reason(&vm);
        vm
    }

    /// Every VM as it is now (see [`Self::settled`]).
    pub async fn list_vms(&self) -> CoreResult<Vec<banger_api::VmRecord>> {
        let mut out = Vec::new();
        for vm in tokio::task::block_in_place(|| self.vms.list())? {
            out.push(self.with_network_note(self.settled(vm).await?));
        }
        Ok(out)
    }

    /// `vm` as it is now: recorded as running while its VMM has gone, it is
    /// settled to stopped under its lock first. Live and stopped VMs cost
    /// no more than a look at /proc. A VM whose lock is held is in the
    /// middle of an operation (a boot, a stop) that records its state
    /// itself: it is shown as recorded, without waiting for that operation.
    async fn settled(&self, vm: banger_api::VmRecord) -> CoreResult<banger_api::VmRecord> {
        if vm.desired_state != banger_api::VmState::Running {
            return Ok(vm);
        }
        if let Some(h) = tokio::task::block_in_place(|| self.boot.live_handles(&vm)) {
            return Ok(banger_api::VmRecord {
                paused: h.paused,
                ..vm
            });
        }
        let Ok(guard) = self.vms.vm_lock(&vm.id).try_lock_owned() else {
            return Ok(vm);
        };
        let Some(vm) = self.store.get_vm(&vm.id).map_err(store_err)? else {
            return Ok(vm);
        };
        let vm = self.boot.settle(vm).await;
        drop(guard);
        vm
    }

    /// Boot a VM (warm from a boot template unless `cold`). After a cold
    /// start of a shape that has no template yet, one is made in the
    /// background when `vm.warm_templates` is on, so the next start of
    /// that shape is warm.
    pub async fn start_vm(
        self: &Arc<Self>,
        reference: &str,
        cold: bool,
        events: EventSink<'_>,
    ) -> CoreResult<crate::boot::StartReport> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        let image = self.images.get(&vm.image_id)?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
        events(banger_api::Event::Message {
            text: format!("vmm: {}", self.vmm_choice),
        });
        let sync = self.file_sync_entries()?;
        let report = self.boot.start(vm, &image, &kernel, events, cold).await?;
        self.copy_file_sync(&report.vm, &sync, events).await?;
        if !report.warm {
            self.warm_later(kernel, self.boot.shape_of(&report.vm));
        }
        Ok(report)
    }

    /// Makes the template of `shape` in the background, if templates are
    /// on, possible here, and missing.
    fn warm_later(
        self: &Arc<Self>,
        kernel: banger_api::KernelRecord,
        shape: crate::boot::template::Shape,
    ) {
        if !self.config.vm.warm_templates
            || self.boot.warm_unsupported(&kernel, shape).is_some()
            || self.boot.template_for(&kernel, shape).is_some()
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match this.boot.make_template(&kernel, shape).await {
                Ok(t) => tracing::info!(key = %t.key, ms = t.made_ms, "made a boot template"),
                Err(e) => tracing::warn!(error = %e, "could not make a boot template"),
            }
        });
    }

    /// `banger warm`: the template for `target` (a kernel; an image or
    /// nothing means the default kernel) at `vcpus` and `memory_mib` (the VM defaults
    /// when not given), made now if missing.
    pub async fn warm(
        &self,
        req: &banger_api::WarmRequest,
    ) -> CoreResult<banger_api::TemplateInfo> {
        // Images boot any kernel (`vm create --kernel`); an image names
        // the default kernel, the one its VMs get unless told otherwise.
        let kernel = match req.target.as_deref() {
            None => self.kernels.default_kernel()?,
            Some(t) => match self.kernels.get(t) {
                Ok(k) => k,
                Err(_) => {
                    self.images
                        .get(t)
                        .map_err(|_| CoreError::not_found(format!("no image or kernel {t:?}")))?;
                    self.kernels.default_kernel()?
                }
            },
        };
        let vcpus = req.vcpus.unwrap_or(self.config.vm.vcpus);
        let memory_mib = req.memory_mib.unwrap_or(self.config.vm.memory_mib);
        banger_api::validate::vcpus(vcpus).map_err(CoreError::invalid)?;
        banger_api::validate::memory_mib(memory_mib).map_err(CoreError::invalid)?;
        let shape = crate::boot::template::Shape {
            vcpus,
            memory_mib,
            nic: self.resources.network().is_active(),
        };
        self.boot.make_template(&kernel, shape).await
    }

    /// Every boot template on this host.
    pub fn templates(&self) -> Vec<banger_api::TemplateInfo> {
        crate::boot::template::list(&self.layout.data_dir)
    }

    /// `[[file_sync]]` checked against the owner's home before a boot.
    fn file_sync_entries(&self) -> CoreResult<Vec<crate::file_sync::Resolved>> {
        crate::file_sync::resolve(&self.config.file_sync, &banger_config::config::home_dir())
    }

    /// Copy `[[file_sync]]` into a VM that just booted.
    async fn copy_file_sync(
        &self,
        vm: &banger_api::VmRecord,
        entries: &[crate::file_sync::Resolved],
        events: EventSink<'_>,
    ) -> CoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        stage(events, "file_sync", format!("{} entries", entries.len()));
        let agent = self.boot.agent(vm).await?;
        crate::file_sync::copy_in(&agent, entries).await
    }

    pub async fn stop_vm(
        &self,
        reference: &str,
        timeout: std::time::Duration,
    ) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        Ok(self.boot.stop(vm, timeout).await?.0)
    }

    /// Change a VM's spec (`vm set`). A running VM's memory changes now,
    /// through its balloon, within what it booted with; the rest applies
    /// at its next boot.
    pub async fn set_vm(
        &self,
        reference: &str,
        req: &banger_api::VmSetRequest,
    ) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        let running = tokio::task::block_in_place(|| self.boot.live_handles(&vm)).is_some();
        let changed = tokio::task::block_in_place(|| self.vms.apply_set(vm, req))?;
        if let (Some(mib), true) = (req.memory_mib, running) {
            self.boot.set_memory(&changed, mib).await?;
        }
        tokio::task::block_in_place(|| self.vms.save(changed))
    }

    /// Stop a running VM's vCPUs (`vm pause`).
    pub async fn pause_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        self.boot.pause(vm).await
    }

    /// Run a paused VM's vCPUs again (`vm resume`).
    pub async fn resume_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        self.boot.resume(vm).await
    }

    pub async fn kill_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        self.boot.kill(vm).await
    }

    pub async fn restart_vm(
        &self,
        reference: &str,
        timeout: std::time::Duration,
        events: EventSink<'_>,
    ) -> CoreResult<crate::boot::StartReport> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        let image = self.images.get(&vm.image_id)?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
        let sync = self.file_sync_entries()?;
        stage(events, "stop", format!("stopping {}", vm.name));
        let (vm, _) = self.boot.stop(vm, timeout).await?;
        let report = self.boot.start(vm, &image, &kernel, events, false).await?;
        self.copy_file_sync(&report.vm, &sync, events).await?;
        Ok(report)
    }

    /// The agent of a running VM, for an exec session.
    pub async fn agent_of(
        &self,
        reference: &str,
    ) -> CoreResult<std::sync::Arc<banger_proto::client::AgentClient>> {
        let vm = self.vms.get(reference)?;
        self.boot.agent(&vm).await
    }

    /// Drop the daemon's agent connection of a VM after a request failed on
    /// it; the next [`Self::agent_of`] reconnects.
    pub async fn forget_agent(&self, reference: &str) {
        if let Ok(vm) = self.vms.get(reference) {
            self.boot.forget_agent(&vm).await;
        }
    }

    /// Remove a VM; with `force`, kill it first if it runs.
    pub async fn remove_vm(
        &self,
        reference: &str,
        force: bool,
    ) -> CoreResult<banger_api::VmRecord> {
        let (mut vm, _guard) = self.locked_vm(reference).await?;
        if force && vm.desired_state == banger_api::VmState::Running {
            vm = self.boot.kill(vm).await?;
        }
        tokio::task::block_in_place(|| self.vms.remove_locked(vm))
    }

    /// Bring up host networking (bridge, forwarding, rules, DNS) as the
    /// config asks; call once, inside the runtime, before [`Self::reconcile`].
    pub async fn start_network(&self) -> String {
        let vms = tokio::task::block_in_place(|| self.vms.list()).unwrap_or_default();
        let net = crate::network::NetworkService::start(&self.config.network, &vms).await;
        let line = net.describe();
        self.resources.set_network(net);
        line
    }

    /// Re-adopt or clean up VMs after a daemon start, then undo restores
    /// that never finished.
    pub async fn reconcile(&self) -> CoreResult<Vec<String>> {
        let vms = self.vms.list()?;
        let mut notes = self.boot.reconcile(vms).await;
        notes.extend(self.reconcile_restores().await);
        Ok(notes)
    }
}
