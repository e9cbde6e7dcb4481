//! VM records and disks: create, list, show, change, remove.
//!
//! A VM is created whole or not at all: its disks are built in a scratch
//! directory, moved into place, and only then is the record written; any
//! failure removes what was built. Booting lives in the boot service; this
//! module owns what a VM *is*.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use banger_api::{ImageRecord, VmCreateRequest, VmRecord, VmSetRequest, VmSpec, VmState, validate};
use banger_store::Store;

use crate::error::{CoreError, CoreResult, disk_error, store_err};
use crate::events::{EventSink, stage};
use crate::guest_files::{self, GuestNet};
use crate::paths::vm_files;
use crate::scratch::{Scratch, remove_any, remove_object, remove_unknown};
use crate::{Config, Layout, alloc, now_rfc3339, resolve};

mod rebase;

#[derive(Debug)]
pub struct VmService {
    config: Arc<Config>,
    layout: Arc<Layout>,
    store: Arc<Store>,
    /// Held from allocation to insert so two creates never pick the same
    /// name, address or CID.
    create_lock: Mutex<()>,
    /// One lock per VM id, held across a whole lifecycle operation. Async
    /// (tokio) so boot operations can hold it across awaits; blocking code
    /// takes it with `blocking_lock`.
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmService {
    pub fn new(config: Arc<Config>, layout: Arc<Layout>, store: Arc<Store>) -> Self {
        Self {
            config,
            layout,
            store,
            create_lock: Mutex::new(()),
            vm_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The create lock, for another module that allocates a VM (a
    /// restore under a new name).
    pub(crate) fn create_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.create_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn vm_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.vm_locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    /// Run `f` on the current record of `reference` under its VM lock. The
    /// record is re-read under the lock so `f` sees committed state.
    pub fn with_vm<T>(
        &self,
        reference: &str,
        f: impl FnOnce(VmRecord) -> CoreResult<T>,
    ) -> CoreResult<T> {
        let id = self.get(reference)?.id;
        let lock = self.vm_lock(&id);
        let _guard = lock.blocking_lock();
        let vm = self
            .store
            .get_vm(&id)
            .map_err(store_err)?
            .ok_or_else(|| CoreError::not_found(format!("vm {reference:?} was removed")))?;
        f(vm)
    }

    /// The network a VM at `ip` is told it has.
    fn guest_net(&self, ip: Ipv4Addr) -> GuestNet {
        let bridge = self.config.network.bridge_cidr;
        GuestNet {
            ip,
            bridge,
            // The daemon's DNS server on the bridge address answers `<name>.vm`
            // and forwards the rest, so it is the guest's one resolver.
            dns: vec![bridge.addr()],
            domain: self.config.network.domain.clone(),
        }
    }

    pub fn list(&self) -> CoreResult<Vec<VmRecord>> {
        self.store.list_vms().map_err(store_err)
    }

    pub fn get(&self, reference: &str) -> CoreResult<VmRecord> {
        let candidates = self
            .store
            .find_vms_by_prefix(reference)
            .map_err(store_err)?;
        resolve::pick("vm", reference, candidates)
    }

    /// Validate a create request against the defaults, producing the spec.
    fn spec_for(&self, req: &VmCreateRequest) -> CoreResult<VmSpec> {
        let d = &self.config.vm;
        let spec = VmSpec {
            vcpus: req.vcpus.unwrap_or(d.vcpus),
            memory_mib: req.memory_mib.unwrap_or(d.memory_mib),
            overlay_disk_bytes: req.overlay_disk_size.unwrap_or(d.overlay_disk_size).0,
            work_disk_bytes: req.work_disk_size.unwrap_or(d.work_disk_size).0,
        };
        validate::vcpus(spec.vcpus).map_err(CoreError::invalid)?;
        validate::memory_mib(spec.memory_mib).map_err(CoreError::invalid)?;
        validate::disk_size(spec.overlay_disk_bytes, "overlay disk size")
            .map_err(CoreError::invalid)?;
        validate::disk_size(spec.work_disk_bytes, "work disk size").map_err(CoreError::invalid)?;
        if let Some(secs) = req.idle_suspend_secs {
            validate::idle_suspend_secs(secs).map_err(CoreError::invalid)?;
        }
        Ok(spec)
    }

    pub fn create(
        &self,
        req: &VmCreateRequest,
        image: &ImageRecord,
        kernel: &banger_api::KernelRecord,
        events: EventSink<'_>,
    ) -> CoreResult<VmRecord> {
        if let Some(name) = &req.name {
            validate::vm_name(name).map_err(CoreError::invalid)?;
        }
        let spec = self.spec_for(req)?;
        crate::ports::check_ports_request(req, &self.config.network)?;

        let ports = crate::ports::with_publish_address(&req.ports, &self.config.network);
        let egress = req
            .egress
            .clone()
            .unwrap_or_else(|| self.config.network.egress.clone());

        let _create = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.list()?;
        crate::ports::check_ports_free(&ports, &existing)?;
        let names: HashSet<String> = existing.iter().map(|v| v.name.clone()).collect();
        let name = match &req.name {
            Some(n) if names.contains(n) => {
                return Err(CoreError::already_exists(format!(
                    "a vm named {n:?} exists already"
                )));
            }
            Some(n) => n.clone(),
            None => alloc::new_name(&names),
        };
        let ips: HashSet<Ipv4Addr> = existing
            .iter()
            .filter_map(|v| v.guest_ip.parse().ok())
            .collect();
        let bridge = self.config.network.bridge_cidr;
        let ip = alloc::next_ip(bridge, &ips).ok_or_else(|| {
            CoreError::conflict(format!(
                "no free guest address left in {bridge}; remove a VM or widen network.bridge_cidr"
            ))
        })?;
        let cids: HashSet<u32> = existing.iter().map(|v| v.vsock_cid).collect();
        let cid = alloc::next_cid(&cids);
        let id = alloc::new_id();

        let vms_dir = self.layout.vms_dir();
        let scratch = Scratch::new(&self.layout, "vm")
            .map_err(|e| disk_error("cannot create scratch directory", &e, &vms_dir))?;
        let net = self.guest_net(ip);
        stage(
            events,
            "prepare_disks",
            format!("building overlay and work disks for {name}"),
        );
        let user_key = crate::ssh::user_key(&self.layout)?;
        let host_key = crate::ssh::generate(&format!("root@{name}"))?;
        let keys = VmKeys {
            authorized: &user_key.public,
            host: &host_key,
        };
        build_disks(scratch.path(), &name, &net, image, &spec, &keys)
            .map_err(|e| e.into_api(&vms_dir))?;

        let dir = self.layout.vm_dir(&id);
        scratch.persist(&dir).map_err(|e| {
            disk_error(
                &format!("cannot move disks to {}", dir.display()),
                &e,
                &vms_dir,
            )
        })?;
        let now = now_rfc3339();
        let record = VmRecord {
            id: id.clone(),
            name,
            image_id: image.id.clone(),
            kernel_id: kernel.id.clone(),
            spec,
            desired_state: VmState::Stopped,
            guest_ip: ip.to_string(),
            vsock_cid: cid,
            dir: dir.display().to_string(),
            overlay_disk: dir.join(vm_files::OVERLAY_DISK).display().to_string(),
            work_disk: dir.join(vm_files::WORK_DISK).display().to_string(),
            created_at: now.clone(),
            updated_at: now,
            paused: false,
            ports,
            network: req.network,
            egress,
            no_network: None,
            agent_fault: None,
            confinement: None,
            idle_suspend_secs: req.idle_suspend_secs,
            suspended: false,
        };
        stage(
            events,
            "save_record",
            format!("recording vm {}", record.name),
        );
        if let Some(pair) = &user_key.new
            && let Err(e) = crate::ssh::save_user_key(&self.layout, pair)
        {
            crate::ssh::forget_user_key(&self.layout);
            remove_any(&dir);
            return Err(e);
        }
        // known_hosts before the record: a record always has its line (a
        // line without a record, from a kill in between, is pruned at the
        // next start).
        let alias = crate::paths::ssh_host_alias(&record.id);
        let names = vec![
            format!("{}.{}", record.name, self.config.network.domain),
            record.guest_ip.clone(),
            alias.clone(),
        ];
        let recorded = crate::ssh::add_known_host(&self.layout, &names, &host_key.public)
            .and_then(|()| self.store.insert_vm(&record).map_err(store_err));
        if let Err(e) = recorded {
            let _ = crate::ssh::remove_known_host(&self.layout, &alias);
            if user_key.new.is_some() {
                crate::ssh::forget_user_key(&self.layout);
            }
            remove_any(&dir);
            return Err(e);
        }
        Ok(record)
    }

    /// `vm` with the spec `req` asks for, checked; the work disk grown
    /// (only while the VM is stopped; it never shrinks). CPU and memory
    /// apply at the next boot (a running VM's memory is resized by the
    /// caller, `Services::set_vm`). Not stored: see [`Self::save`]. The
    /// caller holds the VM's lock.
    pub fn apply_set(&self, mut vm: VmRecord, req: &VmSetRequest) -> CoreResult<VmRecord> {
        if req.vcpus.is_none()
            && req.memory_mib.is_none()
            && req.work_disk_size.is_none()
            && req.idle_suspend_secs.is_none()
        {
            return Err(CoreError::invalid(
                "nothing to change; pass --cpus, --memory, --work-disk-size or --idle-suspend",
            ));
        }
        if let Some(secs) = req.idle_suspend_secs {
            validate::idle_suspend_secs(secs).map_err(CoreError::invalid)?;
            vm.idle_suspend_secs = Some(secs);
        }
        if let Some(n) = req.vcpus {
            validate::vcpus(n).map_err(CoreError::invalid)?;
            vm.spec.vcpus = n;
        }
        if let Some(m) = req.memory_mib {
            validate::memory_mib(m).map_err(CoreError::invalid)?;
            vm.spec.memory_mib = m;
        }
        if let Some(size) = req.work_disk_size {
            validate::disk_size(size.0, "work disk size").map_err(CoreError::invalid)?;
            if size.0 < vm.spec.work_disk_bytes {
                return Err(CoreError::invalid(format!(
                    "work disk of {} is {}; shrinking to {size} is not supported",
                    vm.name,
                    banger_api::ByteSize(vm.spec.work_disk_bytes)
                )));
            }
            if size.0 > vm.spec.work_disk_bytes {
                if vm.desired_state != VmState::Stopped {
                    return Err(CoreError::conflict(format!(
                        "vm {} is running; stop it before growing its work disk",
                        vm.name
                    )));
                }
                banger_disk::grow(Path::new(&vm.work_disk), size.0)
                    .map_err(|e| disk_error("cannot grow the work disk", &e, Path::new(&vm.dir)))?;
                vm.spec.work_disk_bytes = size.0;
            }
        }
        Ok(vm)
    }

    /// Stores a changed record. The caller holds the VM's lock.
    pub fn save(&self, mut vm: VmRecord) -> CoreResult<VmRecord> {
        vm.updated_at = now_rfc3339();
        self.store.update_vm(&vm).map_err(store_err)?;
        Ok(vm)
    }

    /// Remove the record and the VM's directory (see [`Self::remove_locked`]).
    pub fn remove(&self, reference: &str) -> CoreResult<VmRecord> {
        self.with_vm(reference, |vm| self.remove_locked(vm))
    }

    /// Remove a VM whose lock the caller holds. The directory is first moved
    /// to scratch so a crash leaves either the whole VM or nothing.
    pub fn remove_locked(&self, vm: VmRecord) -> CoreResult<VmRecord> {
        if vm.desired_state == VmState::Running {
            return Err(CoreError::conflict(format!(
                "vm {} is running; stop it first, or remove it with --force",
                vm.name
            )));
        }
        remove_object(&self.layout, &self.layout.vm_dir(&vm.id), "vm", || {
            self.store.delete_vm(&vm.id)
        })?;
        let alias = crate::paths::ssh_host_alias(&vm.id);
        if let Err(e) = crate::ssh::remove_known_host(&self.layout, &alias) {
            tracing::warn!(vm = %vm.name, error = %e, "known_hosts entry left behind");
        }
        Ok(vm)
    }

    /// At start: every VM has its known_hosts line (one lost to a crash,
    /// or a VM made before lines came first, gets it back from the host
    /// key on its overlay disk) and no line names a VM that is gone.
    pub(crate) fn reconcile_known_hosts(&self) {
        let Ok(vms) = self.store.list_vms() else {
            return;
        };
        let known = crate::ssh::known_host_ids(&self.layout);
        for vm in vms.iter().filter(|v| !known.contains(&v.id)) {
            let names = vec![
                format!("{}.{}", vm.name, self.config.network.domain),
                vm.guest_ip.clone(),
                crate::paths::ssh_host_alias(&vm.id),
            ];
            let added = self
                .host_key_of(vm)
                .and_then(|k| crate::ssh::add_known_host(&self.layout, &names, &k.public));
            match added {
                Ok(()) => tracing::info!(vm = %vm.name, "known_hosts line restored"),
                Err(e) => tracing::warn!(vm = %vm.name, error = %e, "known_hosts line missing"),
            }
        }
        let ids = vms.into_iter().map(|v| v.id).collect();
        if let Err(e) = crate::ssh::prune_known_hosts(&self.layout, &ids) {
            tracing::warn!(error = %e, "cannot prune known_hosts");
        }
    }

    pub(crate) fn remove_orphans(&self) {
        if let Ok(list) = self.store.list_vms() {
            let known: HashSet<String> = list.into_iter().map(|v| v.id).collect();
            remove_unknown(&self.layout.vms_dir(), &known);
        }
    }
}

/// The SSH keys a new VM's disks carry.
struct VmKeys<'a> {
    /// The managed user key's public half, for root's authorized_keys.
    authorized: &'a str,
    /// The VM's own host key pair.
    host: &'a crate::ssh::KeyPair,
}

/// Build `overlay.ext4` and `work.ext4` in `dir`, concurrently: each is a
/// sparse file and one `mkfs.ext4 -d` with its content staged in.
fn build_disks(
    dir: &Path,
    name: &str,
    net: &GuestNet,
    image: &ImageRecord,
    spec: &VmSpec,
    keys: &VmKeys<'_>,
) -> Result<(), BuildError> {
    let overlay = dir.join(vm_files::OVERLAY_DISK);
    let work = dir.join(vm_files::WORK_DISK);
    let (a, b) = std::thread::scope(|s| {
        let o =
            s.spawn(|| build_overlay(dir, &overlay, name, net, keys.host, spec.overlay_disk_bytes));
        let w = s.spawn(|| build_work(&work, image, keys.authorized, spec.work_disk_bytes));
        (join(o), join(w))
    });
    a?;
    b?;
    Ok(())
}

/// A disk that could not be built, with which one; the caller knows where
/// it was being built, to name it if the filesystem filled up.
#[derive(Debug)]
struct BuildError {
    what: &'static str,
    err: Box<dyn std::error::Error + Send + Sync>,
}

impl BuildError {
    fn into_api(self, dir: &Path) -> CoreError {
        disk_error(self.what, &*self.err, dir)
    }
}

fn join(h: std::thread::ScopedJoinHandle<'_, Result<(), BuildError>>) -> Result<(), BuildError> {
    h.join().unwrap_or_else(|_| {
        Err(BuildError {
            what: "disk builder",
            err: "thread panicked".into(),
        })
    })
}

fn build_overlay(
    dir: &Path,
    out: &Path,
    name: &str,
    net: &GuestNet,
    host_key: &crate::ssh::KeyPair,
    size: u64,
) -> Result<(), BuildError> {
    let disk_err = |e: banger_disk::DiskError| BuildError {
        what: "overlay disk",
        err: Box::new(e),
    };
    let mut staging = banger_disk::Staging::new_in(dir).map_err(disk_err)?;
    staging
        .dir(guest_files::UPPER, 0, 0, 0o755)
        .map_err(disk_err)?;
    staging
        .dir(guest_files::WORKDIR, 0, 0, 0o755)
        .map_err(disk_err)?;
    for f in guest_files::guest_files(name, net) {
        let rel = format!("{}/{}", guest_files::UPPER, f.path);
        staging
            .file(&rel, f.contents.as_bytes(), 0, 0, f.mode)
            .map_err(disk_err)?;
    }
    // sshd refuses a host key others can read.
    let key = format!("{}/{}", guest_files::UPPER, guest_files::SSH_HOST_KEY);
    staging
        .file(&key, host_key.private.as_bytes(), 0, 0, 0o600)
        .map_err(disk_err)?;
    staging
        .file(
            &format!("{key}.pub"),
            format!("{}\n", host_key.public).as_bytes(),
            0,
            0,
            0o644,
        )
        .map_err(disk_err)?;
    staging
        .build(out, size, &banger_disk::MkfsOptions::default())
        .map_err(disk_err)?;
    Ok(())
}

/// The work disk (mounted at /root): one `mkfs.ext4 -d` from the image's
/// work seed, then the owners its manifest records (the seed on disk
/// belongs to the daemon's uid), then root's authorized_keys with the modes
/// sshd's StrictModes demands (`.ssh` 0700, the file 0600, both root's).
fn build_work(
    out: &Path,
    image: &ImageRecord,
    authorized: &str,
    size: u64,
) -> Result<(), BuildError> {
    let seed = Path::new(&image.work_seed_path);
    let manifest_path = crate::paths::seed_manifest(seed);
    let disk_err = |e: banger_disk::DiskError| BuildError {
        what: "work disk",
        err: Box::new(e),
    };
    let manifest = banger_disk::SeedManifest::load(&manifest_path).map_err(disk_err)?;
    banger_disk::build_disk_with_manifest(seed, &manifest, out, size).map_err(disk_err)?;
    banger_disk::put_file(
        out,
        "/.ssh/authorized_keys",
        format!("{authorized}\n").as_bytes(),
        (0, 0, 0o600),
        0o700,
    )
    .map_err(disk_err)
}
