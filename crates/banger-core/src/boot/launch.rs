//! Starting a VM: its [`LaunchSpec`] from the record, a cold boot or the
//! restore of a saved state (a snapshot, a boot template), and the wait
//! for its agent. Every failure after the desired state flips to running
//! goes through one rollback ([`BootService::roll_back`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_api::{ImageRecord, KernelRecord, StartReport, StartTimings, VmRecord, VmState};
use banger_proto::boot_params::{BootParams, InitMode};
use banger_vmm::{DiskRole, DiskSpec, Driver, GuestRam, LaunchSpec, VmHandles};

use super::console::console_tail;
use super::service::{AGENT_READY_TIMEOUT, BootService, vmm_err};
use super::template::Shape;
use crate::error::{CoreError, CoreResult, chain, internal, is_no_space};
use crate::events::{EventSink, stage};
use crate::network::Nic;

impl BootService {
    /// The boot parameters of `vm`: its name, and with a NIC its address,
    /// with the bridge address as gateway and resolver (the daemon's DNS
    /// server answers there).
    pub(super) fn boot_params(&self, vm: &VmRecord, nic: Option<&Nic>) -> BootParams {
        let mut params = BootParams {
            hostname: Some(vm.name.clone()),
            init: InitMode::Auto,
            skip_modules: self.skipped_modules(nic.is_some()),
            ..BootParams::default()
        };
        if nic.is_some() {
            let cidr = self.config.network.bridge_cidr;
            params.ip = vm.guest_ip.parse().ok().map(|ip| (ip, cidr.prefix_len()));
            params.gw = Some(cidr.addr());
            params.dns = vec![cidr.addr()];
        }
        params
    }

    /// Modules of the initramfs this VM's driver and NIC make useless.
    pub(super) fn skipped_modules(&self, has_nic: bool) -> Vec<String> {
        self.driver
            .kind()
            .modules_to_skip(has_nic)
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// The kernel file this driver boots.
    pub(super) fn kernel_image(&self, kernel: &KernelRecord) -> PathBuf {
        let image = Path::new(&kernel.kernel_path);
        let vmlinux = kernel.vmlinux_path.as_deref().map(Path::new);
        self.driver.kind().boot_image(image, vmlinux).to_path_buf()
    }

    pub(super) fn launch_spec(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        initramfs: PathBuf,
        nic: Option<&Nic>,
    ) -> CoreResult<LaunchSpec> {
        let run_dir = self.run_dir(&vm.id);
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| internal(&format!("create {}", run_dir.display()), &e))?;
        let mut disks = vec![
            DiskSpec {
                role: DiskRole::Base,
                path: PathBuf::from(&image.base_path),
                read_only: true,
            },
            DiskSpec {
                role: DiskRole::Overlay,
                path: PathBuf::from(&vm.overlay_disk),
                read_only: false,
            },
            DiskSpec {
                role: DiskRole::Work,
                path: PathBuf::from(&vm.work_disk),
                read_only: false,
            },
        ];
        // Shared by every VM of the kernel, hence read-only.
        if let Some(modules) = &kernel.modules_disk {
            disks.push(DiskSpec {
                role: DiskRole::Modules,
                path: PathBuf::from(modules),
                read_only: true,
            });
        }
        Ok(LaunchSpec {
            name: vm.name.clone(),
            kernel: self.kernel_image(kernel),
            initramfs: Some(initramfs),
            params: self.boot_params(vm, nic),
            vcpus: u8::try_from(vm.spec.vcpus).unwrap_or(u8::MAX),
            memory_mib: u32::try_from(vm.spec.memory_mib).unwrap_or(u32::MAX),
            ram: GuestRam::Anonymous,
            tcg_cache_mib: self.tcg_cache_mib(),
            inject_socket: None,
            disks,
            tap: nic.map(|n| n.tap.clone()),
            tap_fd: None,
            mac: nic.map(|n| n.mac.clone()),
            console_log: Self::console_log(vm),
            console_max: self.config.logs.max_bytes(),
            cgroup: None,
            agent_socket: run_dir.join("agent.sock"),
            api_socket: run_dir.join("control.sock"),
            vsock_cid: Some(vm.vsock_cid),
            run_dir,
            incoming: None,
            detached_nic: false,
        })
    }

    /// Boot `vm` and wait for its agent; the caller holds the VM's lock.
    /// Unless `cold`, a boot template of the VM's shape is restored instead
    /// when there is one (`template.rs`); one that fails to restore is
    /// dropped and the VM boots cold.
    pub async fn start(
        &self,
        vm: VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        events: EventSink<'_>,
        cold: bool,
    ) -> CoreResult<StartReport> {
        let shape = self.shape_of(&vm);
        if !cold && let Some(dir) = self.template_for(kernel, shape) {
            match self
                .launch(vm.clone(), image, kernel, events, Some(&dir), true)
                .await
            {
                Ok(report) => return Ok(report),
                Err(e) => {
                    tracing::warn!(vm = %vm.name, error = %e, "warm start failed; booting cold");
                    stage(
                        events,
                        "warm",
                        format!("the boot template did not restore ({e}); booting cold"),
                    );
                    self.drop_template(&dir);
                }
            }
        }
        self.launch(vm, image, kernel, events, None, false).await
    }

    /// The template shape a start of `vm` would use now.
    pub fn shape_of(&self, vm: &VmRecord) -> Shape {
        Shape {
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            nic: self.has_nic(vm),
        }
    }

    /// [`Self::start`], or with `incoming` a restore: the VMM loads the
    /// saved state in that directory instead of booting (`snapshot.rs`);
    /// with `warm` that state is a boot template, whose agent is told who
    /// it is before it boots on.
    pub(super) async fn launch(
        &self,
        mut vm: VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        events: EventSink<'_>,
        incoming: Option<&Path>,
        warm: bool,
    ) -> CoreResult<StartReport> {
        if self.live_handles(&vm).is_some() {
            return Err(CoreError::conflict(format!(
                "vm {} is already running",
                vm.name
            )));
        }
        crate::kernels::KernelService::ensure_bootable(kernel, self.driver.kind())?;
        let t0 = Instant::now();
        stage(events, "prepare", format!("preparing {}", vm.name));
        let initramfs = tokio::task::block_in_place(|| self.initramfs_for(kernel))?;
        // Desired state first: from here on the VM counts as running for
        // `vm rm` and for reconcile, whatever happens to this daemon.
        self.set_state(&mut vm, VmState::Running)?;
        let mut spawned = None;
        let started = self
            .launch_running(
                &vm,
                (image, kernel, initramfs),
                events,
                (incoming, warm),
                t0,
                &mut spawned,
            )
            .await;
        match started {
            Ok(report) => Ok(report),
            Err(e) => {
                self.roll_back(&mut vm, spawned.as_ref()).await?;
                Err(e)
            }
        }
    }

    /// The part of a launch after the desired state says running; on an
    /// error the caller rolls back, killing the VMM left in `spawned`.
    async fn launch_running(
        &self,
        vm: &VmRecord,
        (image, kernel, initramfs): (&ImageRecord, &KernelRecord, PathBuf),
        events: EventSink<'_>,
        (incoming, warm): (Option<&Path>, bool),
        t0: Instant,
        spawned: &mut Option<VmHandles>,
    ) -> CoreResult<StartReport> {
        let tn = Instant::now();
        let acquired = self.resources.acquire(vm, true).await?;
        let network = tn.elapsed();
        let mut spec = self.launch_spec(vm, image, kernel, initramfs, acquired.nic.as_ref())?;
        spec.incoming = incoming.map(|dir| banger_vmm::Incoming { dir: dir.into() });
        spec.cgroup = self.make_cgroup(vm, self.driver.kind())?;
        // Held until spawn returns: the VMM inherits its own copy.
        let tap_fd = match (&acquired.nic, self.driver.takes_tap_fd()) {
            (Some(nic), true) => Some(self.resources.network().open_tap(nic).await?),
            _ => None,
        };
        spec.tap_fd = tap_fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // A warm start maps the template's RAM; held for as long as this
        // run lasts, so the next start maps the same copy.
        let template_ram = match (warm, incoming) {
            (true, Some(dir)) => {
                let ram = tokio::task::block_in_place(|| self.template_ram(dir))?;
                spec.ram = GuestRam::MappedImage(ram.raw_fd());
                Some(ram)
            }
            _ => None,
        };
        if let Some(nic) = &acquired.nic {
            stage(
                events,
                "network",
                format!("tap {} mac {} address {}", nic.tap, nic.mac, vm.guest_ip),
            );
        }
        let prepare = t0.elapsed();

        stage(events, "spawn", format!("starting {}", self.driver.name()));
        let t1 = Instant::now();
        let handles = self.driver.spawn(&spec).await.map_err(|e| {
            if is_no_space(&e) {
                CoreError::no_space(&vm.dir)
            } else {
                vmm_err(&format!("start {}", vm.name), &e)
            }
        })?;
        drop(tap_fd);
        if let Some(ram) = template_ram {
            self.template_ram.hold(&vm.id, ram);
        }
        let handles = spawned.insert(handles);
        Self::save_handles(vm, handles)?;
        self.adopt_handles(vm, handles.clone());
        if spec.incoming.is_some() {
            self.finish_restore(vm, handles, events).await?;
        }
        let spawn = t1.elapsed();

        stage(events, "boot", "waiting for the guest agent");
        let t2 = Instant::now();
        let ready = if warm {
            self.boot_warm(vm, handles, events).await
        } else {
            self.driver
                .connect_agent(handles, AGENT_READY_TIMEOUT)
                .await
                .map_err(|e| chain(&e))
        };
        let client = ready.map_err(|e| {
            let tail = console_tail(&Self::console_log(vm));
            CoreError::internal(format!("{} did not come up: {e}{tail}", vm.name))
        })?;
        *self.agent_slot(&vm.id).lock().await = Some(self.watch_agent(vm, client));
        let boot = t2.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(StartReport {
            vm: vm.clone(),
            vmm: self.driver.name().to_string(),
            warm,
            timings: StartTimings {
                prepare_ms: ms(prepare),
                network_ms: ms(network),
                spawn_ms: ms(spawn),
                boot_ms: ms(boot),
            },
        })
    }

    /// Undo a launch that failed: kill the VMM if one was spawned, give
    /// back everything the VM held and record it stopped.
    async fn roll_back(&self, vm: &mut VmRecord, spawned: Option<&VmHandles>) -> CoreResult<()> {
        if let Some(h) = spawned {
            let _ = self.driver.kill(h);
            banger_vmm::wait_exit(h, Duration::from_secs(5)).await;
        }
        self.clear_runtime(vm).await;
        self.set_state(vm, VmState::Stopped)
    }
}
