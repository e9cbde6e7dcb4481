//! Which VMM runs VMs: today's choice for new starts, and the driver of
//! whatever VMM started a running VM (the config may have changed since).

use banger_vmm::{AnyDriver, Binaries, VmHandles, VmmKind};

use super::service::BootService;
use crate::Config;
use crate::config::VmmChoice;

/// Where the configuration says each VMM's binary is.
pub(super) fn binaries(config: &Config) -> Binaries {
    Binaries {
        qemu: config.binaries.qemu.clone(),
        firecracker: config.binaries.firecracker.clone(),
    }
}

/// Pick the driver the configuration asks for (`auto`: Firecracker when it
/// can boot here, else QEMU) and say why.
pub fn select_driver(config: &Config) -> (AnyDriver, String) {
    let host = crate::doctor::Host::real();
    let (choice, why) = crate::doctor::resolve_vmm(config, &host);
    let kind = match choice {
        VmmChoice::Firecracker => VmmKind::Firecracker,
        _ => VmmKind::Qemu,
    };
    let driver = AnyDriver::of_kind(kind, &binaries(config));
    let line = match &driver {
        AnyDriver::Qemu(q) => format!("qemu with {} ({why})", q.accel.as_str()),
        AnyDriver::Firecracker(_) => format!("firecracker ({why})"),
    };
    (driver, line)
}

impl BootService {
    /// The driver that started `h` (it may differ from today's choice if the
    /// config changed while the VM ran).
    pub(super) fn driver_for(&self, h: &VmHandles) -> AnyDriver {
        use banger_vmm::Driver;
        if h.driver == self.driver.kind() {
            self.driver.clone()
        } else {
            AnyDriver::of_kind(h.driver, &binaries(&self.config))
        }
    }
}
