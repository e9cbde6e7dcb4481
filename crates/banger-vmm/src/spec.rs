//! What a VM is launched from, and what is momentarily true about it.

use std::path::{Path, PathBuf};

use banger_proto::boot_params::BootParams;
use serde::{Deserialize, Serialize};

/// The role of a disk; decides the `banger.*` parameter naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskRole {
    /// Read-only base image (`banger.root`).
    Base,
    /// Overlay upper disk (`banger.overlay`).
    Overlay,
    /// Work disk at /root (`banger.work`).
    Work,
    /// Read-only module tree of the kernel, mounted at
    /// `/lib/modules/<release>` (`banger.modules`).
    Modules,
}

impl DiskRole {
    /// Names `device` as this disk in the agent's boot parameters.
    pub fn set_device(self, params: &mut BootParams, device: String) {
        let slot = match self {
            DiskRole::Base => &mut params.root,
            DiskRole::Overlay => &mut params.overlay,
            DiskRole::Work => &mut params.work,
            DiskRole::Modules => &mut params.modules,
        };
        *slot = Some(device);
    }

    /// A stable identifier for the disk (virtio-blk serial, drive id).
    pub fn id(self) -> &'static str {
        match self {
            DiskRole::Base => "banger-base",
            DiskRole::Overlay => "banger-overlay",
            DiskRole::Work => "banger-work",
            DiskRole::Modules => "banger-modules",
        }
    }
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// What the guest does with it.
    pub role: DiskRole,
    /// Raw image file.
    pub path: PathBuf,
    /// Attach read-only (always true for the base).
    pub read_only: bool,
}

/// Everything a driver needs to start a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// VM name, for process titles and logs.
    pub name: String,
    /// Uncompressed or bzImage kernel.
    pub kernel: PathBuf,
    /// The banger initramfs.
    pub initramfs: Option<PathBuf>,
    /// The agent's boot parameters (identity, network, init); the driver
    /// adds the disks' devices and its own kernel parameters.
    #[serde(skip)]
    pub params: BootParams,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Where the guest's RAM lives: anonymous memory unless a boot
    /// template is made ([`GuestRam::SharedFile`]) or restored
    /// ([`GuestRam::MappedImage`]).
    #[serde(default)]
    pub ram: GuestRam,
    /// Under TCG, the most the translated-code cache may hold (MiB); none
    /// leaves QEMU's own limit.
    #[serde(default)]
    pub tcg_cache_mib: Option<u32>,
    /// Disks; at most one per role.
    pub disks: Vec<DiskSpec>,
    /// Host tap device for the NIC; none means no network.
    pub tap: Option<String>,
    /// An open queue of `tap`, for a driver that takes one
    /// ([`crate::Driver::takes_tap_fd`]): the VMM gets the descriptor
    /// instead of opening /dev/net/tun itself, which a VMM running as an
    /// ordinary user may not (the device is often root's only). A raw
    /// number: the caller owns it and keeps it open until `spawn` returns.
    #[serde(skip)]
    pub tap_fd: Option<i32>,
    /// Guest MAC for the NIC.
    pub mac: Option<String>,
    /// A Unix socket through which frames can be handed to the guest's
    /// NIC as if they came from the tap (QEMU: a `filter-redirector`),
    /// for a wake that replays the frames that waited in the tap.
    #[serde(default)]
    pub inject_socket: Option<PathBuf>,
    /// A NIC with no host side (when `tap` is none): a boot template's,
    /// so its saved state has the device that every warm start that
    /// attaches a tap will have.
    #[serde(default)]
    pub detached_nic: bool,
    /// Where the guest console is written (by the daemon, rotated at
    /// `console_max` bytes: [`crate::console`]).
    pub console_log: PathBuf,
    /// The console log's bound; 0 means [`crate::console::DEFAULT_MAX_BYTES`].
    #[serde(default)]
    pub console_max: u64,
    /// The VM's own cgroup, made by the caller ([`crate::cgroup`]); the
    /// VMM starts inside it. None: no limits (the host offers none).
    #[serde(default)]
    pub cgroup: Option<crate::cgroup::VmCgroup>,
    /// Agent socket: virtio-serial chardev (QEMU) or hybrid vsock (Firecracker).
    pub agent_socket: PathBuf,
    /// Control socket: QMP (QEMU) or the API socket (Firecracker).
    pub api_socket: PathBuf,
    /// Guest vsock CID (Firecracker).
    pub vsock_cid: Option<u32>,
    /// Scratch directory of this VM (pid file, VMM log).
    pub run_dir: PathBuf,
    /// Restore instead of booting: the saved state to load (see
    /// [`Incoming`]). The spec must describe the same machine the state
    /// was saved from (vCPUs, memory, the same disks by role, a NIC or
    /// none); the disk *paths* may differ. The VM comes up paused; the
    /// driver's `finish_restore` runs it.
    #[serde(default)]
    pub incoming: Option<Incoming>,
}

/// Where a VM's RAM lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestRam {
    /// Anonymous memory of the VMM process: what every cold boot gets,
    /// and what a restore of a VM's own saved state (a snapshot, a
    /// suspend) loads into.
    #[default]
    Anonymous,
    /// The guest's RAM *is* this file, mapped shared: a boot template is
    /// booted this way, so its saved state holds the devices only (QEMU's
    /// `x-ignore-shared`) and the RAM stays in the file
    /// ([`state_files::QEMU_RAM`]).
    SharedFile(PathBuf),
    /// A RAM image mapped copy-on-write from a descriptor the VMM
    /// inherits (a sealed memfd, [`crate::ram::SealedRam`]): a warm start
    /// from a template made with [`GuestRam::SharedFile`]. Pages the guest
    /// only reads stay one copy for every VM of the template; restoring
    /// reads the device state only, whatever the guest's size. A raw
    /// number: the caller keeps it open until `spawn` returns.
    MappedImage(i32),
}

/// Where a saved VM state is, as the driver that saved it wrote it
/// ([`crate::Driver::save_state`] into a directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The snapshot directory holding the driver's state files.
    pub dir: PathBuf,
}

/// The file names a driver's saved state has inside its directory.
pub mod state_files {
    /// QEMU's migration stream (memory and devices together, or the
    /// devices only when the RAM is in [`QEMU_RAM`]).
    pub const QEMU_STATE: &str = "qemu.migration";
    /// A boot template's RAM: the file its guest ran on
    /// ([`super::GuestRam::SharedFile`]), sparse where never touched.
    pub const QEMU_RAM: &str = "qemu.ram";
    /// Firecracker's microVM state (devices, vCPUs).
    pub const FC_STATE: &str = "vmstate.bin";
    /// Firecracker's guest memory.
    pub const FC_MEMORY: &str = "memory.bin";
}

impl LaunchSpec {
    /// The console log's bound in bytes.
    pub fn console_bound(&self) -> u64 {
        if self.console_max == 0 {
            crate::console::DEFAULT_MAX_BYTES
        } else {
            self.console_max
        }
    }

    /// The boot parameters with each disk named by `device(index, role)`.
    pub fn params_with_disks(&self, device: impl Fn(usize, DiskRole) -> String) -> BootParams {
        let mut params = self.params.clone();
        for (i, d) in self.disks.iter().enumerate() {
            d.role.set_device(&mut params, device(i, d.role));
        }
        params
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::VmmError::InvalidSpec(m));
        for r in [
            DiskRole::Base,
            DiskRole::Overlay,
            DiskRole::Work,
            DiskRole::Modules,
        ] {
            if self.disks.iter().filter(|d| d.role == r).count() > 1 {
                return bad(format!("more than one {r:?} disk"));
            }
        }
        if self.vcpus == 0 || self.memory_mib < 64 {
            return bad(format!(
                "{} vcpus / {} MiB is too small",
                self.vcpus, self.memory_mib
            ));
        }
        if !self.kernel.exists() {
            return bad(format!("kernel {} does not exist", self.kernel.display()));
        }
        Ok(())
    }
}

/// What is true about a running VM right now; persisted as `handles.json`
/// and re-checked at daemon start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHandles {
    /// Which driver started it.
    pub driver: crate::VmmKind,
    /// VMM pid.
    pub pid: i32,
    /// Start time of that pid (clock ticks since boot, /proc/PID/stat
    /// field 22): with the pid, identifies the process.
    pub pid_start_time: u64,
    /// Control socket.
    pub api_socket: PathBuf,
    /// Agent socket.
    pub agent_socket: PathBuf,
    /// Console log.
    pub console_log: PathBuf,
    /// QEMU's serial console socket, for a restarted daemon to read the
    /// console again ([`crate::Driver::attach_console`]).
    #[serde(default)]
    pub console_socket: Option<PathBuf>,
    /// The VMM's cgroup, when it has one: removed when the run ends.
    #[serde(default)]
    pub cgroup: Option<crate::cgroup::VmCgroup>,
    /// A jailed Firecracker's chroot directory: removed when the run ends.
    #[serde(default)]
    pub jail: Option<PathBuf>,
    /// The vCPUs are stopped (`vm pause`). Momentary like the rest: it
    /// lives as long as this VMM process, so it is here and not in the
    /// store; absent in files written before pause existed.
    #[serde(default)]
    pub paused: bool,
    /// Paused by a snapshot save, not by the user: a daemon that finds
    /// this at start (the save was cut short) runs the guest again.
    #[serde(default)]
    pub saving: bool,
    /// The guest runs on a shared RAM file ([`GuestRam::SharedFile`]): a
    /// save then writes the devices only.
    #[serde(default)]
    pub shared_ram: bool,
    /// The memory the guest booted with (MiB): the most a balloon resize
    /// can give it back (0 in files written before resizing existed).
    #[serde(default)]
    pub memory_mib: u32,
}

/// Which accelerator QEMU should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// KVM when `/dev/kvm` can run a standard kernel. A PVM host
/// (`/sys/module/kvm_pvm`) only boots PVM-enabled guest kernels; standard
/// ones hang in the decompressor, so that counts as no KVM.
pub fn detect_accel() -> Accel {
    detect_accel_in(Path::new("/"))
}

/// Why KVM here cannot boot a standard guest kernel, or None when it can:
/// for errors that must say why a VM did not come up.
pub fn kvm_limitation() -> Option<&'static str> {
    kvm_limitation_in(Path::new("/"))
}

pub(crate) fn kvm_limitation_in(root: &Path) -> Option<&'static str> {
    if !root.join("dev/kvm").exists() {
        Some("there is no /dev/kvm")
    } else if root.join("sys/module/kvm_pvm").exists() {
        Some(
            "KVM here is PVM-only (kvm_pvm is loaded): it boots only PVM-enabled guest kernels, \
             and a standard kernel hangs before printing anything",
        )
    } else {
        None
    }
}

pub(crate) fn detect_accel_in(root: &Path) -> Accel {
    let kvm = root.join("dev/kvm").exists();
    let pvm = root.join("sys/module/kvm_pvm").exists();
    if kvm && !pvm { Accel::Kvm } else { Accel::Tcg }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_detection() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_accel_in(d.path()), Accel::Tcg);
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/kvm"), "").unwrap();
        assert_eq!(detect_accel_in(d.path()), Accel::Kvm);
        std::fs::create_dir_all(d.path().join("sys/module/kvm_pvm")).unwrap();
        assert_eq!(detect_accel_in(d.path()), Accel::Tcg);
        assert!(kvm_limitation_in(d.path()).unwrap().contains("PVM"));
        std::fs::remove_dir(d.path().join("sys/module/kvm_pvm")).unwrap();
        assert_eq!(kvm_limitation_in(d.path()), None);
        std::fs::remove_file(d.path().join("dev/kvm")).unwrap();
        assert!(kvm_limitation_in(d.path()).unwrap().contains("/dev/kvm"));
    }
}
