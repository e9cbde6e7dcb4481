//! A running VM's memory resized: `vm set --memory` moves its balloon.
//!
//! Every VM boots with a balloon device (QEMU `virtio-balloon-device`
//! with free page reporting, Firecracker's `/balloon`), so pages the
//! guest frees go back to the host on their own, and a resize asks the
//! guest to hand over (or take back) memory without a reboot. A running
//! VM can only shrink and grow again up to the memory it booted with
//! (`VmHandles::memory_mib`): that is all the VMM has mapped for it. The
//! guest's driver works without deflate-on-oom, so what it gives up leaves
//! its `MemTotal` too.

use banger_api::VmRecord;
use banger_vmm::Driver;

use super::service::{BootService, vmm_err};
use crate::error::{CoreError, CoreResult};

impl BootService {
    /// Resizes the running `vm` to `mib` through its balloon. Caller holds
    /// the lock; the record is the caller's to store.
    pub async fn set_memory(&self, vm: &VmRecord, mib: u64) -> CoreResult<()> {
        let h = self
            .live_handles(vm)
            .ok_or_else(|| CoreError::conflict(format!("vm {} is not running", vm.name)))?;
        let booted = u64::from(h.memory_mib);
        if booted == 0 {
            return Err(CoreError::conflict(format!(
                "vm {} was started before memory could be resized; restart it first",
                vm.name
            )));
        }
        if mib > booted {
            return Err(CoreError::invalid(format!(
                "vm {} booted with {booted} MiB and can grow back to that while it runs; \
                 stop it to give it {mib} MiB",
                vm.name
            )));
        }
        let mib = u32::try_from(mib).unwrap_or(u32::MAX);
        self.driver_for(&h)
            .set_memory(&h, mib)
            .await
            .map_err(|e| vmm_err(&format!("resize the memory of {}", vm.name), &e))
    }
}
