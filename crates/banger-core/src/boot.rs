//! Running VMs: start, stop, kill, exec, logs, and the reconcile that
//! re-adopts live VMs when the daemon starts.
//!
//! What is momentarily true about a running VM (VMM pid and start time,
//! sockets) is a [`VmHandles`], kept in memory and in the VM's
//! `handles.json` so a restarted daemon finds its VMs again. Liveness is
//! judged only by the driver's `is_alive` (pid + start time). The SQLite
//! record holds the desired state, which this module flips under the VM's
//! lock: to `running` before the VMM is spawned (so `vm rm` refuses a VM
//! that is booting) and back to `stopped` once it is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_api::{ImageRecord, KernelRecord, VmRecord, VmState};
use banger_proto::client::AgentClient;
use banger_store::Store;
use banger_vmm::{
    AnyDriver, DiskRole, DiskSpec, Driver, GuestRam, LaunchSpec, VmHandles, firecracker, qemu,
};

use crate::config::VmmChoice;
use crate::error::{CoreError, CoreResult, chain, internal, is_no_space, store_err};
use crate::network::Nic;
use crate::paths::vm_files;
use crate::resources::HostResources;
use crate::services::{EventSink, stage};
use crate::{Config, Layout, now_rfc3339};

/// How long a booting guest may take to answer. TCG boots take seconds;
/// a minute covers a loaded CI machine.
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `vm stop` waits for a clean shutdown before killing the VMM.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(20);

mod initramfs;
mod memory;
mod pause;
mod snapshot;
pub mod template;

// The answer of a start is a wire type; re-exported for the core's callers.
pub use banger_api::{StartReport, StartTimings};

/// A VM's agent connection, or none yet; its lock serializes connecting.
type AgentSlot = Arc<tokio::sync::Mutex<Option<Arc<AgentClient>>>>;

pub struct BootService {
    config: Arc<Config>,
    layout: Arc<Layout>,
    store: Arc<Store>,
    driver: AnyDriver,
    agent_bin: PathBuf,
    resources: Arc<HostResources>,
    handles: Mutex<HashMap<String, VmHandles>>,
    /// One slot per VM: connecting to one VM's agent (up to seconds when
    /// its guest is stuck) holds only that VM's slot, never the others'.
    agents: Mutex<HashMap<String, AgentSlot>>,
    /// Initramfs per (kernel id, agent identity), so a start does not hash
    /// the agent and modules again.
    initramfs: Mutex<HashMap<(String, String), PathBuf>>,
    /// Held while an initramfs is built.
    initramfs_build: Mutex<()>,
    /// Held while a boot template is made.
    template_lock: template::TemplateLock,
    /// The sealed RAM images of the templates warm starts used, so VMs
    /// of one template map one copy (`template.rs`).
    template_ram: template::RamCache,
}

impl std::fmt::Debug for BootService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootService")
            .field("driver", &self.driver.name())
            .field("agent_bin", &self.agent_bin)
            .finish_non_exhaustive()
    }
}

/// Pick the driver the configuration asks for (`auto`: Firecracker when it
/// can boot here, else QEMU) and say why.
pub fn select_driver(config: &Config) -> (AnyDriver, String) {
    let host = crate::doctor::Host::real();
    let (choice, why) = crate::doctor::resolve_vmm(config, &host);
    match choice {
        VmmChoice::Firecracker => (
            AnyDriver::Firecracker(firecracker::FirecrackerDriver {
                binary: config.binaries.firecracker.clone(),
            }),
            format!("firecracker ({why})"),
        ),
        _ => {
            let accel = banger_vmm::detect_accel();
            (
                AnyDriver::Qemu(qemu::QemuDriver {
                    binary: config.binaries.qemu.clone(),
                    accel,
                }),
                format!("qemu with {} ({why})", accel.as_str()),
            )
        }
    }
}

fn vmm_err(context: &str, e: &banger_vmm::VmmError) -> CoreError {
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
            template_lock: template::TemplateLock::default(),
            template_ram: template::RamCache::default(),
        }
    }

    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.layout.runtime_dir.join("vms").join(id)
    }

    fn handles_path(vm: &VmRecord) -> PathBuf {
        Path::new(&vm.dir).join(vm_files::HANDLES)
    }

    pub fn console_log(vm: &VmRecord) -> PathBuf {
        Path::new(&vm.dir).join(vm_files::CONSOLE_LOG)
    }

    fn set_state(&self, vm: &mut VmRecord, state: VmState) -> CoreResult<()> {
        vm.desired_state = state;
        vm.updated_at = now_rfc3339();
        self.store.update_vm(vm).map_err(store_err)
    }

    fn save_handles(vm: &VmRecord, h: &VmHandles) -> CoreResult<()> {
        let path = Self::handles_path(vm);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(h)
            .map_err(|e| CoreError::internal(format!("encode handles: {e}")))?;
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                if is_no_space(&e) {
                    CoreError::no_space(&vm.dir)
                } else {
                    internal(&format!("write {}", path.display()), &e)
                }
            })
    }

    fn load_handles(vm: &VmRecord) -> Option<VmHandles> {
        let bytes = std::fs::read(Self::handles_path(vm)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The handles of a VM whose VMM is alive right now. The one liveness
    /// function: everything that asks "is it running" comes here.
    pub fn live_handles(&self, vm: &VmRecord) -> Option<VmHandles> {
        let cached = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&vm.id)
            .cloned();
        let h = cached.or_else(|| Self::load_handles(vm))?;
        self.driver_for(&h).is_alive(&h).then_some(h)
    }

    /// The driver that started `h` (it may differ from today's choice if the
    /// config changed while the VM ran).
    fn driver_for(&self, h: &VmHandles) -> AnyDriver {
        match (h.driver.as_str(), &self.driver) {
            ("qemu", AnyDriver::Qemu(_)) | ("firecracker", AnyDriver::Firecracker(_)) => {
                self.driver.clone()
            }
            ("firecracker", _) => AnyDriver::Firecracker(firecracker::FirecrackerDriver {
                binary: self.config.binaries.firecracker.clone(),
            }),
            _ => AnyDriver::Qemu(qemu::QemuDriver {
                binary: self.config.binaries.qemu.clone(),
                accel: banger_vmm::detect_accel(),
            }),
        }
    }

    /// This VM's agent slot, made empty on first use.
    fn agent_slot(&self, id: &str) -> AgentSlot {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Forget everything momentary about a VM, give back its host
    /// resources and remove its scratch files: every path that ends a run
    /// comes here, so none can leave a tap behind.
    async fn clear_runtime(&self, vm: &VmRecord) {
        self.resources.release(vm).await;
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm.id);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm.id);
        let _ = std::fs::remove_file(Self::handles_path(vm));
        let _ = std::fs::remove_dir_all(self.run_dir(&vm.id));
    }

    fn launch_spec(
        &self,
        vm: &VmRecord,
        image: &ImageRecord,
        kernel: &KernelRecord,
        initramfs: PathBuf,
        nic: Option<&Nic>,
    ) -> CoreResult<LaunchSpec> {
        let mut cmdline = format!("banger.hostname={} banger.init=auto", vm.name);
        if nic.is_some() {
            // The bridge address is the guest's gateway and its resolver
            // (the daemon's DNS server answers there).
            let cidr = self.config.network.bridge_cidr;
            cmdline.push_str(&format!(
                " banger.ip={}/{} banger.gw={gw} banger.dns={gw}",
                vm.guest_ip,
                cidr.prefix_len(),
                gw = cidr.addr(),
            ));
        }
        let skip = modules_to_skip(&self.driver, nic.is_some());
        if !skip.is_empty() {
            cmdline.push_str(&format!(" banger.nomodules={}", skip.join(",")));
        }
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
            kernel: kernel_image(&self.driver, kernel),
            initramfs: Some(initramfs),
            extra_cmdline: cmdline,
            vcpus: u8::try_from(vm.spec.vcpus).unwrap_or(u8::MAX),
            memory_mib: u32::try_from(vm.spec.memory_mib).unwrap_or(u32::MAX),
            ram: GuestRam::Anonymous,
            disks,
            tap: nic.map(|n| n.tap.clone()),
            tap_fd: None,
            mac: nic.map(|n| n.mac.clone()),
            console_log: Self::console_log(vm),
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
    pub fn shape_of(&self, vm: &VmRecord) -> template::Shape {
        template::Shape {
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
            nic: self.resources.network().is_active(),
        }
    }

    /// [`Self::start`], or with `incoming` a restore: the VMM loads the
    /// saved state in that directory instead of booting (`snapshot.rs`);
    /// with `warm` that state is a boot template, whose agent is told who
    /// it is before it boots on.
    async fn launch(
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
        crate::kernels::KernelService::ensure_bootable(kernel, self.driver.name())?;
        let t0 = Instant::now();
        stage(events, "prepare", format!("preparing {}", vm.name));
        let initramfs = tokio::task::block_in_place(|| self.initramfs_for(kernel))?;
        // Desired state first: from here on the VM counts as running for
        // `vm rm` and for reconcile, whatever happens to this daemon.
        self.set_state(&mut vm, VmState::Running)?;
        let tn = Instant::now();
        let acquired = match self.resources.acquire(&vm, true).await {
            Ok(a) => a,
            Err(e) => {
                self.clear_runtime(&vm).await;
                self.set_state(&mut vm, VmState::Stopped)?;
                return Err(e);
            }
        };
        let network = tn.elapsed();
        let mut spec = match self.launch_spec(&vm, image, kernel, initramfs, acquired.nic.as_ref())
        {
            Ok(mut s) => {
                s.incoming = incoming.map(|dir| banger_vmm::Incoming { dir: dir.into() });
                s
            }
            Err(e) => {
                self.clear_runtime(&vm).await;
                self.set_state(&mut vm, VmState::Stopped)?;
                return Err(e);
            }
        };
        // Held until spawn returns: the VMM inherits its own copy.
        let tap_fd = match (&acquired.nic, self.driver.takes_tap_fd()) {
            (Some(nic), true) => match self.resources.network().open_tap(nic).await {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.clear_runtime(&vm).await;
                    self.set_state(&mut vm, VmState::Stopped)?;
                    return Err(e);
                }
            },
            _ => None,
        };
        spec.tap_fd = tap_fd.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // A warm start maps the template's RAM; held until spawn returns
        // (the VMM holds its own mapping after that).
        let template_ram = match (warm, incoming) {
            (true, Some(dir)) => match tokio::task::block_in_place(|| self.template_ram(dir)) {
                Ok(ram) => {
                    spec.ram = GuestRam::MappedImage(ram.raw_fd());
                    Some(ram)
                }
                Err(e) => {
                    self.clear_runtime(&vm).await;
                    self.set_state(&mut vm, VmState::Stopped)?;
                    return Err(e);
                }
            },
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
        let handles = match self.driver.spawn(&spec).await {
            Ok(h) => h,
            Err(e) => {
                self.clear_runtime(&vm).await;
                self.set_state(&mut vm, VmState::Stopped)?;
                if is_no_space(&e) {
                    return Err(CoreError::no_space(&vm.dir));
                }
                return Err(vmm_err(&format!("start {}", vm.name), &e));
            }
        };
        drop(tap_fd);
        drop(template_ram);
        if let Err(e) = Self::save_handles(&vm, &handles) {
            let _ = self.driver.kill(&handles);
            self.clear_runtime(&vm).await;
            self.set_state(&mut vm, VmState::Stopped)?;
            return Err(e);
        }
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.id.clone(), handles.clone());
        if spec.incoming.is_some()
            && let Err(e) = self.finish_restore(&vm, &handles, events).await
        {
            let _ = self.driver.kill(&handles);
            banger_vmm::wait_exit(&handles, Duration::from_secs(5)).await;
            self.clear_runtime(&vm).await;
            self.set_state(&mut vm, VmState::Stopped)?;
            return Err(e);
        }
        let spawn = t1.elapsed();

        stage(events, "boot", "waiting for the guest agent");
        let t2 = Instant::now();
        let ready = if warm {
            self.boot_warm(&vm, &handles, events).await
        } else {
            self.driver
                .connect_agent(&handles, AGENT_READY_TIMEOUT)
                .await
                .map_err(|e| chain(&e))
        };
        match ready {
            Ok(client) => {
                *self.agent_slot(&vm.id).lock().await = Some(Arc::new(client));
            }
            Err(e) => {
                let _ = self.driver.kill(&handles);
                banger_vmm::wait_exit(&handles, Duration::from_secs(5)).await;
                self.clear_runtime(&vm).await;
                self.set_state(&mut vm, VmState::Stopped)?;
                let tail = console_tail(&Self::console_log(&vm));
                return Err(CoreError::internal(format!(
                    "{} did not come up: {e}{tail}",
                    vm.name,
                )));
            }
        }
        let boot = t2.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Ok(StartReport {
            vm,
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

    /// Shut the guest down through its agent, killing the VMM after
    /// `timeout`. Returns whether it stopped cleanly. Caller holds the lock.
    pub async fn stop(&self, mut vm: VmRecord, timeout: Duration) -> CoreResult<(VmRecord, bool)> {
        let Some(h) = self.live_handles(&vm) else {
            self.clear_runtime(&vm).await;
            if vm.desired_state != VmState::Stopped {
                self.set_state(&mut vm, VmState::Stopped)?;
            }
            return Ok((vm, true));
        };
        let mut h = h;
        if h.paused {
            // A frozen guest cannot shut itself down: run it again first.
            // If that fails the kill below still stops it.
            let _ = self.resume_handles(&vm, &mut h).await;
        }
        // Through our own agent connection: the QEMU serial channel takes
        // one client at a time, and the agent's shutdown works with or
        // without an init in the guest.
        let mut asked = false;
        for _attempt in 0..2 {
            let Ok(agent) = self.agent(&vm).await else {
                break;
            };
            if agent.shutdown(false).await.is_ok() {
                asked = true;
                break;
            }
            self.forget_agent(&vm).await;
        }
        let clean = asked && banger_vmm::wait_exit(&h, timeout).await;
        if !clean {
            let _ = self.driver_for(&h).kill(&h);
            banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        }
        self.clear_runtime(&vm).await;
        self.set_state(&mut vm, VmState::Stopped)?;
        Ok((vm, clean))
    }

    /// Kill the VMM now. Caller holds the lock.
    pub async fn kill(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        if let Some(h) = self.live_handles(&vm) {
            self.driver_for(&h)
                .kill(&h)
                .map_err(|e| vmm_err(&format!("kill {}", vm.name), &e))?;
            banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        }
        self.clear_runtime(&vm).await;
        self.set_state(&mut vm, VmState::Stopped)?;
        Ok(vm)
    }

    /// Drop this daemon's connection to a VM's agent, so the next
    /// [`Self::agent`] reconnects: for callers whose request failed on it.
    pub async fn forget_agent(&self, vm: &VmRecord) {
        self.agent_slot(&vm.id).lock().await.take();
    }

    /// The agent of a running VM, connecting (again) when this daemon has no
    /// connection yet: after a restart, or after [`Self::forget_agent`]. No
    /// probe on the hot path: a request that fails on a stale connection
    /// forgets it and retries once.
    pub async fn agent(&self, vm: &VmRecord) -> CoreResult<Arc<AgentClient>> {
        let Some(h) = self.live_handles(vm) else {
            return Err(CoreError::conflict(format!(
                "vm {} is not running; start it with `banger vm start {}`",
                vm.name, vm.name
            )));
        };
        Self::refuse_paused(vm, &h)?;
        let slot = self.agent_slot(&vm.id);
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = self
            .driver_for(&h)
            .connect_agent(&h, Duration::from_secs(10))
            .await
            .map_err(|e| vmm_err(&format!("connect to the agent of {}", vm.name), &e))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A VM recorded as running whose VMM is gone (the guest powered itself
    /// off, the VMM crashed) is cleaned up and recorded as stopped, so
    /// listings never report a dead VM as running. Caller holds the lock.
    pub async fn settle(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        if vm.desired_state == VmState::Running && self.live_handles(&vm).is_none() {
            self.clear_runtime(&vm).await;
            self.set_state(&mut vm, VmState::Stopped)?;
        }
        Ok(vm)
    }

    /// At daemon start: re-adopt VMs whose VMM still runs, and for the others
    /// remove their leftovers and record them as stopped.
    pub async fn reconcile(&self, vms: Vec<VmRecord>) -> Vec<String> {
        let mut notes = Vec::new();
        self.clean_interrupted_templates(&mut notes).await;
        let mut live = Vec::new();
        for mut vm in vms {
            let handles = Self::load_handles(&vm);
            let alive = handles
                .as_ref()
                .filter(|h| self.driver_for(h).is_alive(h))
                .cloned();
            match (vm.desired_state, alive) {
                (VmState::Running, Some(mut h)) => {
                    self.resume_interrupted_save(&vm, &mut h).await;
                    self.handles
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(vm.id.clone(), h);
                    notes.push(format!("re-adopted running vm {}", vm.name));
                    live.push(vm);
                }
                (VmState::Running, None) => {
                    Self::kill_unrecorded_vmms(&vm, &mut notes).await;
                    self.clear_runtime(&vm).await;
                    if self.set_state(&mut vm, VmState::Stopped).is_ok() {
                        notes.push(format!(
                            "vm {} died while the daemon was away; marked stopped",
                            vm.name
                        ));
                    }
                }
                (VmState::Stopped, Some(h)) => {
                    // Only a daemon killed between spawn and the state flip
                    // gets here: nobody asked for this VM to run.
                    let _ = self.driver_for(&h).kill(&h);
                    self.clear_runtime(&vm).await;
                    notes.push(format!("killed stray vmm of stopped vm {}", vm.name));
                }
                (VmState::Stopped, None) => {
                    Self::kill_unrecorded_vmms(&vm, &mut notes).await;
                    if handles.is_some() {
                        self.clear_runtime(&vm).await;
                    }
                }
            }
        }
        // Dead VMs released theirs in clear_runtime; live ones keep theirs.
        let live: Vec<&VmRecord> = live.iter().collect();
        notes.extend(self.resources.reconcile(&live, &[]).await);
        notes
    }
}

impl BootService {
    /// Kills any VMM still running on `vm`'s disks that no handles name: a
    /// daemon killed after the VMM started and before `handles.json` was
    /// written leaves one (it would hold the disks' write locks and block
    /// the next start). Found by its arguments, which name the VM's dir.
    async fn kill_unrecorded_vmms(vm: &VmRecord, notes: &mut Vec<String>) {
        let dir = format!("{}/", vm.dir.trim_end_matches('/'));
        for (pid, start) in banger_vmm::process::vmms_naming(&dir) {
            if banger_vmm::process::kill(pid, start).is_ok() {
                for _ in 0..50 {
                    if !banger_vmm::process::is_alive(pid, start) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                notes.push(format!(
                    "killed vmm {pid} of vm {}, which no handles named",
                    vm.name
                ));
            }
        }
    }
}

/// Modules of the initramfs this VM cannot use: the vsock transport when the
/// agent channel is QEMU's virtio-serial port, the console port driver
/// under Firecracker, the NIC driver when there is no NIC. Loading a module
/// under emulation costs tens of milliseconds of boot.
fn modules_to_skip(driver: &AnyDriver, has_nic: bool) -> Vec<&'static str> {
    let mut skip = Vec::new();
    if !has_nic {
        skip.extend(["virtio_net", "net_failover", "failover"]);
    }
    match driver {
        AnyDriver::Qemu(_) => skip.extend([
            "vmw_vsock_virtio_transport",
            "vmw_vsock_virtio_transport_common",
            "vsock",
        ]),
        AnyDriver::Firecracker(_) => skip.push("virtio_console"),
    }
    skip
}

/// The image the driver boots: Firecracker loads only an ELF vmlinux, QEMU
/// boots the image as imported (a bzImage when there is one).
fn kernel_image(driver: &AnyDriver, kernel: &KernelRecord) -> PathBuf {
    match (driver, &kernel.vmlinux_path) {
        (AnyDriver::Firecracker(_), Some(vmlinux)) => PathBuf::from(vmlinux),
        _ => PathBuf::from(&kernel.kernel_path),
    }
}

/// The last lines of the console, to say why a guest did not come up.
fn console_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    format!(" (console: {tail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_modules_follow_the_driver_and_nic() {
        let q = AnyDriver::Qemu(qemu::QemuDriver::default());
        let f = AnyDriver::Firecracker(firecracker::FirecrackerDriver::default());
        assert!(modules_to_skip(&q, false).contains(&"vsock"));
        assert!(modules_to_skip(&q, false).contains(&"virtio_net"));
        assert!(!modules_to_skip(&q, true).contains(&"virtio_net"));
        assert!(!modules_to_skip(&q, false).contains(&"virtio_console"));
        assert!(modules_to_skip(&f, true).contains(&"virtio_console"));
        assert!(!modules_to_skip(&f, true).contains(&"vsock"));
    }

    #[test]
    fn firecracker_boots_the_vmlinux_and_qemu_the_image_as_imported() {
        let q = AnyDriver::Qemu(qemu::QemuDriver::default());
        let f = AnyDriver::Firecracker(firecracker::FirecrackerDriver::default());
        let mut k = KernelRecord {
            id: "k".into(),
            name: "k".into(),
            release: None,
            kernel_path: "/k/vmlinuz".into(),
            vmlinux_path: Some("/k/vmlinux".into()),
            config_path: None,
            initrd_path: None,
            modules_path: None,
            modules_disk: None,
            vmm_support: Vec::new(),
            is_default: false,
            created_at: String::new(),
        };
        assert_eq!(kernel_image(&f, &k), PathBuf::from("/k/vmlinux"));
        assert_eq!(kernel_image(&q, &k), PathBuf::from("/k/vmlinuz"));
        k.vmlinux_path = None;
        assert_eq!(kernel_image(&f, &k), PathBuf::from("/k/vmlinuz"));
    }

    #[test]
    fn console_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, "a\n\nb\nc\nd\n").unwrap();
        assert_eq!(console_tail(&p), " (console: b | c | d)");
        assert_eq!(console_tail(&dir.path().join("none")), "");
    }
}
