//! What is momentarily true about a running VM: its [`VmHandles`], kept in
//! memory and in the VM's `handles.json`, the one liveness function, and
//! [`BootService::clear_runtime`], which every end of a run goes through.

use std::path::{Path, PathBuf};

use banger_api::VmRecord;
use banger_vmm::{Driver, VmHandles};

use super::service::BootService;
use crate::error::{CoreError, CoreResult, internal, is_no_space};
use crate::paths::vm_files;

impl BootService {
    fn handles_path(vm: &VmRecord) -> PathBuf {
        Path::new(&vm.dir).join(vm_files::HANDLES)
    }

    pub(super) fn save_handles(vm: &VmRecord, h: &VmHandles) -> CoreResult<()> {
        let path = Self::handles_path(vm);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(h)
            .map_err(|e| CoreError::internal(format!("encode handles: {e}")))?;
        // Written whole and renamed into place, then made durable (the
        // file and the directory fsynced) on a thread of its own: after a
        // power cut `handles.json` is the old whole file or the new one;
        // the start does not wait ~2 disk flushes for it (a daemon that
        // crashes meanwhile loses nothing: the page cache outlives it).
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            std::fs::rename(&tmp, &path)?;
            let dir = std::fs::File::open(&vm.dir)?;
            std::thread::spawn(move || {
                let _ = f.sync_all();
                let _ = dir.sync_all();
            });
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            if is_no_space(&e) {
                CoreError::no_space(&vm.dir)
            } else {
                internal(&format!("write {}", path.display()), &e)
            }
        })
    }

    pub(super) fn load_handles(vm: &VmRecord) -> Option<VmHandles> {
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

    /// Keep `h` as the handles of a VM this daemon runs.
    pub(super) fn adopt_handles(&self, vm: &VmRecord, h: VmHandles) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.id.clone(), h);
    }

    /// Forget everything momentary about a VM, give back its host
    /// resources and remove its scratch files: every path that ends a run
    /// comes here, so none can leave a tap behind.
    pub(super) async fn clear_runtime(&self, vm: &VmRecord) {
        self.resources.release(vm).await;
        self.forget_run(vm);
        // A suspended guest's saved state is part of its run.
        for f in [
            vm_files::SUSPEND,
            vm_files::SUSPEND_TMP,
            vm_files::SUSPEND_WAKING,
        ] {
            crate::scratch::remove_any(&Path::new(&vm.dir).join(f));
        }
    }

    /// Forget the VMM process of a VM (its agent connection, handles,
    /// cgroup, jail and run directory) but keep what it holds on the host:
    /// a suspend ends the VMM while the VM keeps its tap, name and
    /// published ports.
    pub(super) fn forget_run(&self, vm: &VmRecord) {
        let h = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&vm.id)
            .cloned()
            .or_else(|| Self::load_handles(vm));
        self.remove_cgroup(vm, h.as_ref());
        self.template_ram.release(&vm.id);
        // A jailed Firecracker's chroot: links to the VM's files, its
        // sockets and device nodes; the VM's files stay.
        if let Some(jail) = h.as_ref().and_then(|h| h.jail.as_ref()) {
            banger_vmm::firecracker::jail::Jail::remove(jail);
        }
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm.id);
        self.agent_faults
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
}
