//! What confines each VM's VMM, beyond its own sandbox (QEMU's seccomp
//! `-sandbox`, Firecracker's jailer): a cgroup of its own with memory and
//! process limits ([`banger_vmm::cgroup`]), made before the spawn and
//! removed when the run ends, and the one line `vm show` gives about it.

use banger_api::VmRecord;
use banger_vmm::cgroup::{Cgroups, Limits, VmCgroup, VmGroups};
use banger_vmm::{Driver, VmHandles, VmmKind};

use super::service::BootService;
use crate::error::{CoreError, CoreResult};

impl BootService {
    /// Makes `vm`'s cgroup for a VMM of `kind`, or `None` where this host
    /// offers none (the VM then runs without limits, and says so).
    pub(super) fn make_cgroup(&self, vm: &VmRecord, kind: VmmKind) -> CoreResult<Option<VmCgroup>> {
        if let Cgroups::Unavailable(_) = self.cgroups {
            return Ok(None);
        }
        let limits = Limits::for_guest(
            u32::try_from(vm.spec.memory_mib).unwrap_or(u32::MAX),
            kind.memory_overhead_mib(self.tcg_cache_mib()),
            u8::try_from(vm.spec.vcpus).unwrap_or(u8::MAX),
        );
        self.cgroups.create(&vm.id, limits).map(Some).map_err(|e| {
            CoreError::internal(format!(
                "cannot make the cgroup of vm {}: {}",
                vm.name,
                crate::error::chain(&e)
            ))
        })
    }

    /// Removes `vm`'s cgroup once its VMM is gone (a group still holding a
    /// process stays).
    pub(super) fn remove_cgroup(&self, vm: &VmRecord, h: Option<&VmHandles>) {
        if let Some(g) = h.and_then(|h| h.cgroup.as_ref()) {
            g.remove();
        }
        self.cgroups.groups_of(&vm.id).remove();
    }

    /// How the running VMM of `h` is confined, in one line.
    pub fn confinement(&self, h: &VmHandles) -> String {
        let sandbox = self.driver_for(h).confinement(h);
        let cgroup = match (&h.cgroup, &self.cgroups) {
            (Some(g), _) => g.describe(),
            (None, Cgroups::Unavailable(why)) => format!("no cgroup ({why})"),
            (None, _) => "no cgroup (started before this host offered one)".into(),
        };
        format!("{sandbox}; {cgroup}")
    }

    /// The host's cgroup support, for `doctor` and logs.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }
}
