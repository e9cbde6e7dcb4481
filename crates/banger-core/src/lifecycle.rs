//! The VM lifecycle as the daemon's routes see it: create, show and list
//! (settling VMs whose VMM went away), start (warm when it can), stop,
//! pause, resume, kill, restart, remove, and the agent of a running VM.
//! Each operation holds the VM's lock for its whole duration and re-reads
//! the record under it.

use std::sync::Arc;

use crate::Services;
use crate::error::{CoreError, CoreResult, store_err};
use crate::events::{EventSink, stage};
use crate::kernels::KernelService;

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
        KernelService::ensure_bootable(&kernel, self.boot.vmm())?;
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

    /// Change a VM's spec (`vm set`). A running VM's memory changes now,
    /// through its balloon, within what it booted with; the rest applies
    /// at its next boot.
    pub async fn set_vm(
        &self,
        reference: &str,
        req: &banger_api::VmSetRequest,
    ) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        if req.memory_mib.is_some() {
            // A resize is of a running guest's balloon.
            self.wake_locked(&vm).await?;
        }
        let running = tokio::task::block_in_place(|| self.boot.live_handles(&vm)).is_some();
        let changed = tokio::task::block_in_place(|| self.vms.apply_set(vm, req))?;
        if let (Some(mib), true) = (req.memory_mib, running) {
            self.boot.set_memory(&changed, mib).await?;
        }
        tokio::task::block_in_place(|| self.vms.save(changed))
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
                agent_fault: self.boot.agent_fault(&vm),
                confinement: Some(self.boot.confinement(&h)),
                ..vm
            });
        }
        if tokio::task::block_in_place(|| self.boot.is_suspended(&vm)) {
            return Ok(banger_api::VmRecord {
                suspended: true,
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
        events(banger_api::Event::Message {
            text: format!("vmm: {}", self.vmm_choice),
        });
        // Starting a suspended VM is waking it.
        if let Some(w) = self.wake_locked(&vm).await? {
            stage(events, "wake", format!("woke {} from suspend", vm.name));
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            return Ok(crate::boot::StartReport {
                vm,
                vmm: self.boot.vmm().to_string(),
                warm: false,
                timings: banger_api::StartTimings {
                    prepare_ms: 0.0,
                    network_ms: 0.0,
                    spawn_ms: ms(w.restore),
                    boot_ms: ms(w.ready.saturating_sub(w.restore)),
                },
            });
        }
        let image = self.images.get(&vm.image_id)?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
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
        let task = tokio::spawn(async move {
            match this.boot.make_template(&kernel, shape).await {
                Ok(t) => tracing::info!(key = %t.key, ms = t.made_ms, "made a boot template"),
                Err(e) => tracing::warn!(error = %e, "could not make a boot template"),
            }
        });
        let mut tasks = self
            .background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
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
        let mut made = self.boot.make_template(&kernel, shape).await?;
        made.state = "ready".into();
        Ok(made)
    }

    /// Every boot template on this host.
    pub fn templates(&self) -> Vec<banger_api::TemplateInfo> {
        let mut list = crate::boot::template::list(&self.layout.data_dir);
        for t in &mut list {
            let shape = crate::boot::template::Shape {
                vcpus: t.vcpus,
                memory_mib: t.memory_mib,
                nic: t.nic,
            };
            let current = self
                .kernels
                .get(&t.kernel_id)
                .ok()
                .and_then(|k| self.boot.template_for(&k, shape))
                .is_some_and(|dir| dir.ends_with(&t.key));
            t.state = if current { "ready" } else { "stale" }.into();
        }
        list
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
        Ok(self.stop_phases(reference, timeout).await?.0)
    }

    /// A stop in the three phases of [`crate::boot::stop`]: ask under the
    /// lock (up to the deadline), wait for the VMM without it, kill what is
    /// left under it again. Returns the guard of that last phase, so a
    /// restart boots under the same hold, and whether the stop was clean.
    async fn stop_phases(
        &self,
        reference: &str,
        timeout: std::time::Duration,
    ) -> CoreResult<(banger_api::VmRecord, bool, tokio::sync::OwnedMutexGuard<()>)> {
        // A timeout past what an Instant can hold waits as long as one can.
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(1 << 32));
        let (vm, guard) = self.locked_by(reference, deadline).await?;
        // A suspended guest is woken to shut down cleanly: its page cache
        // may hold writes its disks have not seen.
        self.wake_locked(&vm).await?;
        let id = vm.id.clone();
        let (handles, asked) = match self.boot.ask_stop(vm, deadline).await? {
            crate::boot::Stopping::Done(vm) => return Ok((*vm, true, guard)),
            crate::boot::Stopping::Asked { handles, asked } => (handles, asked),
        };
        drop(guard);
        if asked {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            banger_vmm::wait_exit(&handles, left).await;
        }
        let (vm, guard) = self.locked_by(&id, deadline).await?;
        let (vm, clean) = self.boot.finish_stop(vm, &handles, asked).await?;
        Ok((vm, clean, guard))
    }

    /// The VM's lock, waited for until `deadline`; past it the VMM is
    /// killed ([`crate::boot::BootService::kill_now`]), which ends whatever
    /// holds the lock waiting on the guest, and the lock comes soon after.
    async fn locked_by(
        &self,
        reference: &str,
        deadline: tokio::time::Instant,
    ) -> CoreResult<(banger_api::VmRecord, tokio::sync::OwnedMutexGuard<()>)> {
        match tokio::time::timeout_at(deadline, self.locked_vm(reference)).await {
            Ok(locked) => locked,
            Err(_) => {
                self.boot.kill_now(&self.vms.get(reference)?);
                self.locked_vm(reference).await
            }
        }
    }

    /// Stop a running VM's vCPUs (`vm pause`).
    pub async fn pause_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.awake_vm(reference).await?;
        self.boot.pause(vm).await
    }

    /// Run a paused VM's vCPUs again (`vm resume`); a suspended VM wakes.
    pub async fn resume_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        let (vm, _guard) = self.locked_vm(reference).await?;
        if self.wake_locked(&vm).await?.is_some() {
            return Ok(vm);
        }
        self.boot.resume(vm).await
    }

    /// Kill a VM's VMM at once, then record it stopped; a suspended VM's
    /// saved guest is dropped. The SIGKILL comes before the lock
    /// ([`crate::boot::BootService::kill_now`]), so a kill never waits
    /// behind an operation that waits on the guest.
    pub async fn kill_vm(&self, reference: &str) -> CoreResult<banger_api::VmRecord> {
        self.boot.kill_now(&self.vms.get(reference)?);
        let (vm, _guard) = self.locked_vm(reference).await?;
        // Its tap queue closes before the tap is deleted.
        drop(self.unwatch(&vm).await);
        self.boot.kill(vm).await
    }

    pub async fn restart_vm(
        &self,
        reference: &str,
        timeout: std::time::Duration,
        events: EventSink<'_>,
    ) -> CoreResult<crate::boot::StartReport> {
        let vm = self.vms.get(reference)?;
        let image = self.images.get(&vm.image_id)?;
        let kernel = self.kernels.get(&vm.kernel_id)?;
        let sync = self.file_sync_entries()?;
        stage(events, "stop", format!("stopping {}", vm.name));
        let (vm, _, _guard) = self.stop_phases(&vm.id, timeout).await?;
        let report = self.boot.start(vm, &image, &kernel, events, false).await?;
        self.copy_file_sync(&report.vm, &sync, events).await?;
        Ok(report)
    }

    /// The agent of a running VM, for an exec session (or a copy, a tcp
    /// stream, ports): a use of the VM, which wakes it when suspended and
    /// counts for its idle period.
    pub async fn agent_of(
        &self,
        reference: &str,
    ) -> CoreResult<std::sync::Arc<banger_proto::client::AgentClient>> {
        let mut vm = self.vms.get(reference)?;
        if tokio::task::block_in_place(|| self.boot.is_suspended(&vm)) {
            let (awake, _guard) = self.awake_vm(&vm.id).await?;
            vm = awake;
        }
        self.touch(&vm.id);
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
        if force {
            // As `vm kill`: the VMM dies before the lock is waited for.
            self.boot.kill_now(&self.vms.get(reference)?);
        }
        let (mut vm, _guard) = self.locked_vm(reference).await?;
        if force && vm.desired_state == banger_api::VmState::Running {
            drop(self.unwatch(&vm).await);
            vm = self.boot.kill(vm).await?;
        }
        tokio::task::block_in_place(|| self.vms.remove_locked(vm))
    }

    /// Bring up host networking (bridge, forwarding, rules, DNS) as the
    /// config asks; call once, inside the runtime, before [`Self::reconcile`].
    pub async fn start_network(&self) -> String {
        let vms = tokio::task::block_in_place(|| self.vms.list()).unwrap_or_default();
        let state = self.layout.runtime_dir.join("network-state.json");
        let net = crate::network::NetworkService::start(&self.config.network, &vms, &state).await;
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
