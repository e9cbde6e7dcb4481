//! Which VMM runs a VM ([`VmmKind`]) and what the rest of banger needs to
//! know about each one, so that no other crate compares driver names.
//!
//! A kind is stored (in `handles.json`, snapshot rows, template metadata)
//! by its lower-case name, `qemu` or `firecracker`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state_files;

/// One VMM implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    /// QEMU `-M microvm`.
    Qemu,
    /// Firecracker.
    Firecracker,
}

impl VmmKind {
    /// Every kind.
    pub const ALL: [VmmKind; 2] = [VmmKind::Qemu, VmmKind::Firecracker];

    /// The stored name: `qemu`, `firecracker`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmmKind::Qemu => "qemu",
            VmmKind::Firecracker => "firecracker",
        }
    }

    /// Modules of banger's initramfs this VMM's guests cannot use: the vsock
    /// transport where the agent channel is QEMU's virtio-serial port, the
    /// console port driver under Firecracker (its agent channel is vsock),
    /// and the NIC driver when there is no NIC. Loading a module under
    /// emulation costs tens of milliseconds of boot.
    pub fn modules_to_skip(self, has_nic: bool) -> Vec<&'static str> {
        let mut skip = Vec::new();
        if !has_nic {
            skip.extend(["virtio_net", "net_failover", "failover"]);
        }
        match self {
            VmmKind::Qemu => skip.extend([
                "vmw_vsock_virtio_transport",
                "vmw_vsock_virtio_transport_common",
                "vsock",
            ]),
            VmmKind::Firecracker => skip.push("virtio_console"),
        }
        skip
    }

    /// The kernel file this VMM boots: Firecracker loads only an ELF
    /// `vmlinux`, QEMU boots the image as imported (a bzImage when there is
    /// one).
    pub fn boot_image<'a>(self, image: &'a Path, vmlinux: Option<&'a Path>) -> &'a Path {
        match (self, vmlinux) {
            (VmmKind::Firecracker, Some(v)) => v,
            _ => image,
        }
    }

    /// MiB the VMM itself may use beyond the guest's RAM, in its cgroup:
    /// QEMU's own structures and, under TCG, its translated-code cache
    /// (`tcg_cache_mib`, the VM's cap, else [`crate::qemu::TCG_TB_MIB`]);
    /// Firecracker is small.
    pub fn memory_overhead_mib(self, tcg_cache_mib: Option<u32>) -> u32 {
        match self {
            VmmKind::Qemu => 256 + tcg_cache_mib.unwrap_or(crate::qemu::TCG_TB_MIB),
            VmmKind::Firecracker => 128,
        }
    }

    /// Whether the VMM takes its tap as an inherited descriptor
    /// ([`crate::LaunchSpec::tap_fd`]), so it never opens /dev/net/tun.
    pub fn takes_tap_fd(self) -> bool {
        matches!(self, VmmKind::Qemu)
    }

    /// The file whose presence in a directory says this VMM saved a state
    /// there (see [`state_files`]).
    pub fn state_file(self) -> &'static str {
        match self {
            VmmKind::Qemu => state_files::QEMU_STATE,
            VmmKind::Firecracker => state_files::FC_STATE,
        }
    }
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no VMM kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown vmm {0:?} (qemu or firecracker)")]
pub struct UnknownVmm(pub String);

impl FromStr for VmmKind {
    type Err = UnknownVmm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmmKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVmm(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_round_trip_and_match_the_stored_form() {
        for k in VmmKind::ALL {
            assert_eq!(k.as_str().parse::<VmmKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert!("kvm".parse::<VmmKind>().is_err());
    }

    #[test]
    fn skipped_modules_follow_the_kind_and_nic() {
        let (q, f) = (VmmKind::Qemu, VmmKind::Firecracker);
        assert!(q.modules_to_skip(false).contains(&"vsock"));
        assert!(q.modules_to_skip(false).contains(&"virtio_net"));
        assert!(!q.modules_to_skip(true).contains(&"virtio_net"));
        assert!(!q.modules_to_skip(false).contains(&"virtio_console"));
        assert!(f.modules_to_skip(true).contains(&"virtio_console"));
        assert!(!f.modules_to_skip(true).contains(&"vsock"));
    }

    #[test]
    fn the_cgroup_allows_for_the_code_cache_the_vm_was_given() {
        let q = VmmKind::Qemu;
        assert_eq!(q.memory_overhead_mib(None), 256 + crate::qemu::TCG_TB_MIB);
        // A larger configured cache must not get the VMM OOM-killed.
        assert_eq!(q.memory_overhead_mib(Some(1024)), 256 + 1024);
        assert_eq!(VmmKind::Firecracker.memory_overhead_mib(Some(1024)), 128);
    }

    #[test]
    fn firecracker_boots_the_vmlinux_and_qemu_the_image_as_imported() {
        let image = PathBuf::from("/k/vmlinuz");
        let vmlinux = PathBuf::from("/k/vmlinux");
        let f = VmmKind::Firecracker;
        assert_eq!(f.boot_image(&image, Some(&vmlinux)), vmlinux.as_path());
        assert_eq!(
            VmmKind::Qemu.boot_image(&image, Some(&vmlinux)),
            image.as_path()
        );
        assert_eq!(f.boot_image(&image, None), image.as_path());
    }
}
