//! Which VMM runs VMs: today's choice for new starts, and the driver of
//! whatever VMM started a running VM (the config may have changed since).

use banger_vmm::firecracker::jail::Jailer;
use banger_vmm::{AnyDriver, Binaries, VmHandles, VmmKind};

use super::service::BootService;
use crate::Config;
use crate::config::VmmChoice;

/// Where the configuration says each VMM's binary is, and how Firecracker
/// is jailed here (a root daemon with the jailer: in a chroot per VM under
/// `<data_dir>/jail`, as the daemon's own uid; otherwise not at all, and
/// `vm show` and `doctor` say why).
pub(super) fn binaries(config: &Config) -> Binaries {
    let euid = rustix::process::geteuid().as_raw();
    let jailer = crate::doctor::firecracker_jail(config, &crate::doctor::Host::real(), euid)
        .ok()
        .map(|plan| Jailer {
            binary: plan.jailer,
            seccomp_filter: plan.seccomp_filter,
            chroot_base: crate::datadir::canonical(&config.data_dir).join("jail"),
            uid: euid,
            gid: rustix::process::getegid().as_raw(),
        });
    Binaries {
        qemu: config.binaries.qemu.clone(),
        firecracker: config.binaries.firecracker.clone(),
        jailer,
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
