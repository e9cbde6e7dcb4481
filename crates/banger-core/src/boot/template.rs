//! Boot templates: warm starts.
//!
//! A template is the saved state of a guest that booted its kernel and
//! stopped in the initramfs with only the agent channel up (the agent's
//! `banger.template=1`), before any disk, NIC driver or per-VM name was
//! bound. One template serves every VM of its *shape*: kernel, initramfs
//! (agent and modules), VMM binary and accelerator, vCPUs, memory, whether
//! there is a NIC and a modules disk. A warm start restores the template
//! with this VM's own disks, tap and sockets, sends the agent the VM's
//! identity (hostname, clock, entropy, address and MAC), and the agent
//! then loads the disk, NIC and filesystem drivers and boots on exactly as
//! a cold boot does. So a block device's capacity is read from the VM's
//! own disk when its driver probes, after the restore.
//!
//! Kept in `<data_dir>/templates/<kernel id>/<shape key>/` (made in
//! `templates/.making/`, renamed into place when whole); the key hashes
//! everything the state depends on, so a changed agent or VMM simply
//! misses, and making a template removes that kernel's templates of the
//! same size that no longer match. Removing the kernel removes its
//! templates. Under QEMU, and under a jailed Firecracker for shapes
//! without a NIC: Firecracker's restore reopens the disk paths saved in
//! the state, which its jail makes the same in-chroot names for every VM
//! (`banger_vmm::firecracker::jail`; the load is validated against the
//! real binaries in `banger-vmm/tests/firecracker_jailed.rs`, no
//! Firecracker guest booting on our machines).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_api::{KernelRecord, VmRecord};
use banger_proto::boot_params::{BootParams, InitMode};
use banger_proto::client::AgentClient;
use banger_vmm::ram::SealedRam;
use banger_vmm::{DiskRole, DiskSpec, Driver, GuestRam, LaunchSpec, VmHandles};
use sha2::{Digest, Sha256};

use super::console::console_tail;
use super::service::{AGENT_READY_TIMEOUT, BootService, vmm_err};
use crate::error::{CoreError, CoreResult, chain, internal};
use crate::events::{EventSink, stage};

/// Bumped when what a template holds, or how it is made, changes.
const FORMAT: &str = "banger-template/2";
/// Metadata file of a finished template.
const META: &str = "template.json";
/// The MAC of a template's NIC; every warm start replaces it.
const TEMPLATE_MAC: &str = "02:00:00:00:00:01";
/// Size of the stand-in disks a template boots with (never read).
const PLACEHOLDER_BYTES: u64 = 1 << 20;
/// How long saving a template may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// The machine a template is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub nic: bool,
}

/// How long a template guest runs at its wait before it is saved, so the
/// pages it freed while booting are reported and punched out of its RAM
/// file (Linux reports free pages 2 s after they accumulate).
const FREED_PAGES_REPORTED: Duration = Duration::from_millis(3000);

/// What a finished template records about itself (its `template.json`):
/// the wire type, so listing is reading.
pub type TemplateMeta = banger_api::TemplateInfo;

impl BootService {
    /// The agent of a VM restored from a template: told who it is (it then
    /// loads its drivers, mounts this VM's disks and boots on), then
    /// reached again once it serves as this VM.
    pub(super) async fn boot_warm(
        &self,
        vm: &VmRecord,
        h: &VmHandles,
        events: EventSink<'_>,
    ) -> Result<AgentClient, String> {
        let waiting = self
            .driver
            .connect_agent(h, AGENT_READY_TIMEOUT)
            .await
            .map_err(|e| chain(&e))?;
        stage(
            events,
            "warm",
            "restored the boot template; binding this VM",
        );
        waiting
            .set_identity(self.identity_for(vm))
            .await
            .map_err(|e| {
                format!(
                    "the template's agent did not take the identity: {}",
                    chain(&e)
                )
            })?;
        // A new connection: the booted agent serves a new session.
        drop(waiting);
        self.driver
            .connect_agent(h, AGENT_READY_TIMEOUT)
            .await
            .map_err(|e| chain(&e))
    }

    /// Where templates are made before they are renamed into place. Only
    /// a template boot names it (its stand-in disks and console are
    /// there); warm VMs name only finished templates.
    fn making_dir(&self) -> PathBuf {
        self.layout.data_dir.join("templates").join(".making")
    }

    /// At daemon start: a template boot that a dead daemon never finished
    /// leaves a QEMU (found by its arguments, which name the making dir)
    /// and a half-made dir; both go.
    /// At daemon stop, once its template tasks are over: what they left
    /// (a template QEMU, a half-made dir) goes, as after a crash.
    pub async fn end_template_work(&self) -> Vec<String> {
        let mut notes = Vec::new();
        self.clean_interrupted_templates(&mut notes).await;
        notes
    }

    pub(super) async fn clean_interrupted_templates(&self, notes: &mut Vec<String>) {
        let making = self.making_dir();
        let prefix = format!("{}/", making.display());
        for (pid, start) in banger_vmm::process::vmms_naming(&prefix) {
            if banger_vmm::process::kill(pid, start).is_ok() {
                notes.push(format!("killed vmm {pid} of an unfinished boot template"));
            }
        }
        let _ = std::fs::remove_dir_all(self.layout.runtime_dir.join("templates"));
        if making.exists() && std::fs::remove_dir_all(&making).is_ok() {
            notes.push("removed unfinished boot templates".to_string());
        }
    }

    /// Why `kernel` cannot have templates under this driver, if it cannot.
    pub fn warm_unsupported(&self, kernel: &KernelRecord, shape: Shape) -> Option<String> {
        if let Some(why) = self.driver.templates_unsupported(shape.nic) {
            return Some(format!(
                "warm starts are not made with {} here: {why}",
                self.driver.name()
            ));
        }
        // The disk and NIC drivers must load after the restore, so they
        // probe this VM's devices: a kernel that has them built in probed
        // the template's stand-ins.
        let Some(dir) = kernel.modules_path.as_deref() else {
            return Some(format!(
                "kernel {} has no module tree: its disk driver is built in and would bind at boot",
                kernel.name
            ));
        };
        let index = match banger_kernel::ModuleIndex::open(Path::new(dir)) {
            Ok(i) => i,
            Err(e) => return Some(format!("kernel {}: {}", kernel.name, chain(&e))),
        };
        let mut need = vec!["virtio_blk"];
        if shape.nic {
            need.push("virtio_net");
        }
        need.into_iter().find(|m| !index.has_module(m)).map(|m| {
            format!(
                "kernel {} has {m} built in: it would bind the template's devices at boot",
                kernel.name
            )
        })
    }

    /// Where the template of `shape` for `kernel` lives.
    fn template_dir(&self, kernel: &KernelRecord, shape: Shape) -> CoreResult<PathBuf> {
        let agent = self.agent_identity(kernel)?;
        if let Some(why) = self.driver.templates_unsupported(shape.nic) {
            return Err(CoreError::invalid(format!(
                "warm starts are not made with {} here: {why}",
                self.driver.kind()
            )));
        }
        let mut h = Sha256::new();
        let head = [FORMAT.to_string(), kernel.id.clone(), agent.clone()];
        for part in head.into_iter().chain(self.driver.state_identity()).chain([
            shape.vcpus.to_string(),
            shape.memory_mib.to_string(),
            shape.nic.to_string(),
            kernel.modules_disk.is_some().to_string(),
        ]) {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let key = hex::encode(&h.finalize()[..8]);
        let dir = self
            .layout
            .data_dir
            .join("templates")
            .join(&kernel.id)
            .join(key);
        Ok(dir)
    }

    /// The finished template a start of `shape` can restore, if any.
    pub fn template_for(&self, kernel: &KernelRecord, shape: Shape) -> Option<PathBuf> {
        if self.warm_unsupported(kernel, shape).is_some() {
            return None;
        }
        let dir = tokio::task::block_in_place(|| self.template_dir(kernel, shape)).ok()?;
        read_meta(&dir).map(|_| dir)
    }

    /// The sealed RAM image of the template in `dir`: loaded on first use
    /// and kept while VMs map it, so every VM of the template maps one
    /// copy (`ram_cache.rs`).
    pub(super) fn template_ram(&self, dir: &Path) -> CoreResult<Arc<SealedRam>> {
        let file = dir.join(banger_vmm::state_files::QEMU_RAM);
        let ino = std::fs::metadata(&file)
            .map_err(|e| internal(&format!("stat {}", file.display()), &e))?
            .ino();
        self.template_ram.get_or_load(dir, ino, || {
            SealedRam::load(&file).map_err(|e| {
                if crate::error::is_no_space(&e) {
                    CoreError::no_space("/dev/shm")
                } else {
                    internal("load the template's RAM", &e)
                }
            })
        })
    }

    /// Lets go of the template RAM images no running VM has mapped for a
    /// while ([`super::ram_cache::KEEP`]); called every second.
    pub fn sweep_template_ram(&self) {
        let freed = self.template_ram.sweep(std::time::Instant::now());
        if freed > 0 {
            tracing::info!(
                mib = freed >> 20,
                "released a boot template's RAM no running VM maps"
            );
        }
    }

    /// Drops a template that failed to restore, so the next start makes a
    /// new one instead of failing the same way.
    pub(super) fn drop_template(&self, dir: &Path) {
        self.template_ram.remove(dir);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The template of `shape` for `kernel`, made now if there is none:
    /// boot to the agent's wait, save, stop.
    pub async fn make_template(
        &self,
        kernel: &KernelRecord,
        shape: Shape,
    ) -> CoreResult<TemplateMeta> {
        if let Some(why) = self.warm_unsupported(kernel, shape) {
            return Err(CoreError::invalid(why));
        }
        crate::kernels::KernelService::ensure_bootable(kernel, self.driver.kind())?;
        let _one = self.template_lock.lock().await;
        let dir = tokio::task::block_in_place(|| self.template_dir(kernel, shape))?;
        if let Some(meta) = read_meta(&dir) {
            return Ok(meta);
        }
        let initramfs = tokio::task::block_in_place(|| self.initramfs_for(kernel))?;
        let key = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let tmp = self.making_dir().join(format!("{}-{key}", kernel.id));
        std::fs::create_dir_all(&parent)
            .map_err(|e| internal(&format!("create {}", parent.display()), &e))?;
        let run_dir = self.layout.runtime_dir.join("templates").join(&key);
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_dir_all(&run_dir);
        let made = self
            .boot_and_save(kernel, shape, &initramfs, &tmp, &run_dir)
            .await;
        let _ = std::fs::remove_dir_all(&run_dir);
        let (state_bytes, made_ms) = match made {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let meta = TemplateMeta {
            key,
            kernel_id: kernel.id.clone(),
            kernel: kernel.name.clone(),
            vmm: self.driver.name().to_string(),
            vcpus: shape.vcpus,
            memory_mib: shape.memory_mib,
            nic: shape.nic,
            made_at: crate::now_rfc3339(),
            state_bytes,
            made_ms,
            state: String::new(),
        };
        let finish = || -> std::io::Result<()> {
            let body = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
            std::fs::write(tmp.join(META), body)?;
            std::fs::rename(&tmp, &dir)
        };
        if let Err(e) = finish() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(if crate::error::is_no_space(&e) {
                CoreError::no_space(parent.display())
            } else {
                internal(&format!("store the template in {}", dir.display()), &e)
            });
        }
        prune_stale(&parent, &meta);
        Ok(meta)
    }

    /// Boots a template guest in `tmp`, waits for its agent, saves its
    /// state there and stops it. Returns the state's size and the time.
    async fn boot_and_save(
        &self,
        kernel: &KernelRecord,
        shape: Shape,
        initramfs: &Path,
        tmp: &Path,
        run_dir: &Path,
    ) -> CoreResult<(u64, f64)> {
        let t0 = Instant::now();
        let io = |what: &str, e: std::io::Error| {
            if crate::error::is_no_space(&e) {
                CoreError::no_space(tmp.display())
            } else {
                internal(what, &e)
            }
        };
        std::fs::create_dir_all(tmp).map_err(|e| io("create the template dir", e))?;
        std::fs::create_dir_all(run_dir).map_err(|e| io("create the template run dir", e))?;
        let mut roles = vec![
            (DiskRole::Base, true),
            (DiskRole::Overlay, false),
            (DiskRole::Work, false),
        ];
        if kernel.modules_disk.is_some() {
            roles.push((DiskRole::Modules, true));
        }
        // The guest runs on this file, mapped shared: its state is saved
        // without the RAM, which stays here for warm starts to map.
        let ram = tmp.join(banger_vmm::state_files::QEMU_RAM);
        std::fs::File::create(&ram)
            .and_then(|f| f.set_len(shape.memory_mib << 20))
            .map_err(|e| io("create the template's RAM file", e))?;
        let mut disks = Vec::new();
        for (role, read_only) in roles {
            let path = tmp.join(format!("{}.img", role.id()));
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(PLACEHOLDER_BYTES))
                .map_err(|e| io("create a stand-in disk", e))?;
            disks.push(DiskSpec {
                role,
                path,
                read_only,
            });
        }
        let params = BootParams {
            template: true,
            hostname: Some("banger-template".into()),
            init: InitMode::Auto,
            skip_modules: self.skipped_modules(shape.nic),
            ..BootParams::default()
        };
        let spec = LaunchSpec {
            name: "template".into(),
            kernel: self.kernel_image(kernel),
            initramfs: Some(initramfs.to_path_buf()),
            params,
            vcpus: u8::try_from(shape.vcpus).unwrap_or(u8::MAX),
            memory_mib: u32::try_from(shape.memory_mib).unwrap_or(u32::MAX),
            ram: GuestRam::SharedFile(ram.clone()),
            tcg_cache_mib: self.tcg_cache_mib(),
            inject_socket: None,
            disks,
            tap: None,
            tap_fd: None,
            mac: shape.nic.then(|| TEMPLATE_MAC.to_string()),
            detached_nic: shape.nic,
            console_log: tmp.join("console.log"),
            console_max: 0,
            cgroup: None,
            agent_socket: run_dir.join("agent.sock"),
            api_socket: run_dir.join("control.sock"),
            vsock_cid: None,
            run_dir: run_dir.to_path_buf(),
            incoming: None,
        };
        let h = self
            .driver
            .spawn(&spec)
            .await
            .map_err(|e| vmm_err("start a template guest", &e))?;
        let saved = async {
            // The agent answers hello from its wait: the guest is where
            // the template must be.
            let agent = self
                .driver
                .connect_agent(&h, AGENT_READY_TIMEOUT)
                .await
                .map_err(|e| {
                    let tail = console_tail(&spec.console_log);
                    CoreError::internal(format!(
                        "the template guest did not come up: {}{tail}",
                        chain(&e)
                    ))
                })?;
            // What the guest freed while it booted goes back before the
            // save (free page reporting, ~2 s after the freeing): QEMU
            // punches those pages out of the shared RAM file, so the
            // template holds what the guest uses, not every page it ever
            // touched.
            tokio::time::sleep(FREED_PAGES_REPORTED).await;
            self.driver
                .pause(&h)
                .await
                .map_err(|e| vmm_err("pause the template guest", &e))?;
            self.driver
                .save_state(&h, tmp, SAVE_TIMEOUT)
                .await
                .map_err(|e| vmm_err("save the template", &e))?;
            drop(agent);
            Ok::<_, CoreError>(())
        }
        .await;
        let _ = self.driver.kill(&h);
        banger_vmm::wait_exit(&h, Duration::from_secs(10)).await;
        saved?;
        for d in &spec.disks {
            let _ = std::fs::remove_file(&d.path);
        }
        // The RAM went to the page cache through the guest's mapping:
        // on disk before the template is renamed into place.
        let state = tmp.join(banger_vmm::state_files::QEMU_STATE);
        let mut bytes = 0;
        for f in [&state, &ram] {
            let file = std::fs::File::open(f).map_err(|e| io("open the saved template", e))?;
            file.sync_all()
                .map_err(|e| io("write the saved template to disk", e))?;
            // Allocated bytes: the RAM file is sparse where never touched.
            bytes += file
                .metadata()
                .map_err(|e| io("stat the saved template", e))?
                .blocks()
                * 512;
        }
        Ok((bytes, t0.elapsed().as_secs_f64() * 1e3))
    }
}

fn read_meta(dir: &Path) -> Option<TemplateMeta> {
    let body = std::fs::read(dir.join(META)).ok()?;
    let whole = [
        banger_vmm::state_files::QEMU_STATE,
        banger_vmm::state_files::QEMU_RAM,
    ]
    .iter()
    .all(|f| dir.join(f).is_file());
    whole.then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// Removes the kernel's other templates of the same machine size: made
/// with another agent or VMM, no start will ask for them again.
fn prune_stale(kernel_dir: &Path, current: &TemplateMeta) {
    let Ok(rd) = std::fs::read_dir(kernel_dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Some(m) = read_meta(&p) else { continue };
        if m.key != current.key
            && m.vcpus == current.vcpus
            && m.memory_mib == current.memory_mib
            && m.nic == current.nic
        {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Every finished template under `data_dir`.
pub fn list(data_dir: &Path) -> Vec<TemplateMeta> {
    let mut out = Vec::new();
    let Ok(kernels) = std::fs::read_dir(data_dir.join("templates")) else {
        return out;
    };
    for k in kernels.flatten().filter(|k| k.file_name() != ".making") {
        let Ok(rd) = std::fs::read_dir(k.path()) else {
            continue;
        };
        out.extend(rd.flatten().filter_map(|e| read_meta(&e.path())));
    }
    out.sort_by(|a, b| a.made_at.cmp(&b.made_at));
    out
}
