//! Records the daemon exposes: what a VM, an image and a kernel *are*.
//!
//! These are durable facts (the SQLite rows). Momentary facts about a running
//! VM (VMM pid, sockets) are not here; they travel as [`VmRuntime`] and are
//! never stored in the database.
//!
//! These are responses: a CLI may read them from a newer daemon, so none of
//! them rejects unknown fields (requests do, see `request.rs`).

use serde::{Deserialize, Serialize};

/// What the user asked for. Changing it (`vm set`) changes the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmSpec {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub overlay_disk_bytes: u64,
    pub work_disk_bytes: u64,
}

/// The state the user wants the VM to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Disks exist, no VMM runs.
    Stopped,
    /// A VMM should be running.
    Running,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Running => "running",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stopped" => Some(VmState::Stopped),
            "running" => Some(VmState::Running),
            _ => None,
        }
    }
}

/// A VM as stored: identity, spec, image, deterministic paths and the
/// addresses allocated to it for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmRecord {
    /// 16 lowercase hex characters, stable for the VM's life.
    pub id: String,
    /// Unique, DNS-label safe; `<name>.vm` resolves to `guest_ip`.
    pub name: String,
    pub image_id: String,
    pub kernel_id: String,
    pub spec: VmSpec,
    pub desired_state: VmState,
    /// IPv4 address on the host bridge, e.g. `172.16.0.2`.
    pub guest_ip: String,
    /// vsock context id, unique among VMs, >= 3.
    pub vsock_cid: u32,
    /// Directory holding the VM's disks and scratch files.
    pub dir: String,
    pub overlay_disk: String,
    pub work_disk: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub updated_at: String,
    /// The VM runs but its vCPUs are stopped (`vm pause`). A momentary
    /// fact read from the VMM's handles when the record is answered, never
    /// stored: a new VMM process starts unpaused, so it cannot outlive one.
    #[serde(default)]
    pub paused: bool,
    /// Host ports forwarded to the guest while it runs (`-p`), kept across
    /// stop and start.
    #[serde(default)]
    pub ports: Vec<crate::PortSpec>,
    /// Whether it gets a NIC (`--network`).
    #[serde(default)]
    pub network: crate::VmNetwork,
    /// Where it may send traffic (`--egress`): `all`, `none` or an allow list.
    #[serde(default)]
    pub egress: crate::Egress,
    /// Why the VM has no NIC (`--network none`, or the daemon's host
    /// networking is off and why); absent when it has one or will at its
    /// next start. Momentary, like `paused`: filled in when the record is
    /// answered, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_network: Option<String>,
    /// Why the daemon cut this run's guest agent off (it flooded the
    /// connection, stopped reading, or does no flow control), once it did.
    /// Momentary, like `paused`: true of this VMM run only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_fault: Option<String>,
    /// How the running VMM is confined: its sandbox (QEMU's seccomp
    /// filter, Firecracker's jailer) and its cgroup with limits, or why it
    /// has none. Momentary: absent while the VM is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<String>,
    /// Seconds without use after which the running VM is suspended
    /// (`--idle-suspend`): its state saved to disk and its VMM ended,
    /// woken by the next use. 0: never. Absent: the daemon's
    /// `vm.idle_suspend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_suspend_secs: Option<u64>,
    /// The VM is suspended: wanted running, its guest saved on disk, no
    /// VMM. Any use wakes it. Filled in when the record is answered, from
    /// the VM's directory, never stored.
    #[serde(default)]
    pub suspended: bool,
}

impl VmRecord {
    /// What `vm ls` shows: `paused`, `suspended`, or the desired state.
    pub fn state_label(&self) -> &'static str {
        if self.desired_state != VmState::Running {
            self.desired_state.as_str()
        } else if self.suspended {
            "suspended"
        } else if self.paused {
            "paused"
        } else {
            self.desired_state.as_str()
        }
    }
}

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// `banger image import DIR`
    Directory { path: String },
    /// `banger image import ROOTFS.tar[.gz|.zst]`
    Tarball { path: String },
    /// `banger image pull REF`
    Registry { reference: String, digest: String },
    /// `banger image commit VM NAME`: the VM's root filesystem (its image
    /// and overlay) and its work disk, as they were at `created_at`.
    Commit {
        /// The VM's id and name at the time.
        vm_id: String,
        vm_name: String,
        /// The image the VM ran on (it may since have been removed).
        parent_image_id: String,
        parent_image_name: String,
    },
    /// A kind this build does not know (a newer daemon's); never sent.
    #[serde(other)]
    Unknown,
}

/// Image configuration honoured at `vm run` (from an OCI config, or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// A read-only base filesystem plus the seed of every VM's `/root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRecord {
    pub id: String,
    pub name: String,
    pub source: ImageSource,
    /// Path of the read-only ext4 base.
    pub base_path: String,
    /// Directory holding the work seed (`/root` of the image) and its manifest.
    pub work_seed_path: String,
    /// Apparent size of the base ext4 in bytes.
    pub size_bytes: u64,
    /// Whether the image has its own init (`/sbin/init` or systemd).
    pub has_init: bool,
    pub config: ImageConfig,
    pub created_at: String,
}

/// A bootable kernel and what the banger initramfs needs from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelRecord {
    pub id: String,
    pub name: String,
    /// `uname -r` of the kernel when known (from a .deb or modules dir).
    pub release: Option<String>,
    /// Path of the kernel image (bzImage or vmlinux).
    pub kernel_path: String,
    /// The uncompressed ELF kernel (given, or derived from the bzImage at
    /// import), for VMMs that boot nothing else.
    #[serde(default)]
    pub vmlinux_path: Option<String>,
    /// The kernel's `.config` (from the package or IKCONFIG), when found.
    #[serde(default)]
    pub config_path: Option<String>,
    pub initrd_path: Option<String>,
    /// Directory `lib/modules/<release>` when the kernel came with modules.
    pub modules_path: Option<String>,
    /// Read-only ext4 of the module tree, attached to every VM and mounted
    /// at `/lib/modules/<release>`.
    #[serde(default)]
    pub modules_disk: Option<String>,
    /// Which VMMs can boot it, judged at import. Empty for kernels imported
    /// before banger judged them.
    #[serde(default)]
    pub vmm_support: Vec<VmmSupport>,
    pub is_default: bool,
    pub created_at: String,
}

/// Whether one VMM can boot a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmmSupport {
    /// `firecracker` or `qemu`.
    pub vmm: String,
    pub bootable: Bootable,
    /// Why not (`no`), or what is missing to tell (`unknown`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Bootable {
    Yes,
    No,
    Unknown,
}

impl VmmSupport {
    /// `yes`, `no (reason; reason)`, `unknown (reason)`.
    pub fn summary(&self) -> String {
        let word = match self.bootable {
            Bootable::Yes => "yes",
            Bootable::No => "no",
            Bootable::Unknown => "unknown",
        };
        if self.reasons.is_empty() {
            word.to_string()
        } else {
            format!("{word} ({})", self.reasons.join("; "))
        }
    }
}

impl KernelRecord {
    /// The verdict for `vmm`, if one was recorded.
    pub fn support_for(&self, vmm: &str) -> Option<&VmmSupport> {
        self.vmm_support.iter().find(|s| s.vmm == vmm)
    }
}

/// What a catalog entry's file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KernelFileFormat {
    /// A Debian `linux-image-*` package.
    #[serde(rename = "deb")]
    Deb,
    /// An ELF kernel.
    #[serde(rename = "vmlinux")]
    Vmlinux,
    /// An x86 boot image.
    #[serde(rename = "bzImage")]
    BzImage,
}

impl KernelFileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelFileFormat::Deb => "deb",
            KernelFileFormat::Vmlinux => "vmlinux",
            KernelFileFormat::BzImage => "bzImage",
        }
    }
}

/// A kernel `banger kernel pull` can fetch: pinned by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelCatalogEntry {
    pub name: String,
    /// Where it is fetched from, resolved against `kernel_mirror` when the
    /// entry names a path on a Debian mirror.
    pub url: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub format: KernelFileFormat,
    /// `builtin` (shipped in banger) or `config` (`[[kernel_catalog]]`).
    pub origin: String,
}

/// `GET /v1/version`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaemonInfo {
    pub api_version: u32,
    pub version: String,
    pub pid: u32,
    pub socket: String,
    pub data_dir: String,
    pub started_at: String,
}

/// One line of `banger doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoctorCheck {
    pub name: String,
    pub status: CheckStatus,
    /// What was found, e.g. `/usr/bin/qemu-system-x86_64 (QEMU 7.2.0)`.
    pub detail: String,
    /// What to do about a failure or warning; empty when passing.
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

/// What freeing the blob cache removed (`POST /v1/images/prune`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
}

/// Where the time of a start went, for `vm run` and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartTimings {
    /// Initramfs lookup, launch spec, sockets, host resources.
    pub prepare_ms: f64,
    /// Of `prepare_ms`: taking the VM's host resources (tap, DNS record).
    #[serde(default)]
    pub network_ms: f64,
    /// Spawning the VMM until it runs.
    pub spawn_ms: f64,
    /// From the VMM running to the agent answering.
    pub boot_ms: f64,
}

/// The answer of `vm start` and `vm restart`: the VM and where the time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartReport {
    pub vm: VmRecord,
    /// The driver that booted it: `qemu` or `firecracker`.
    pub vmm: String,
    /// Restored from a boot template instead of booted (a warm start).
    #[serde(default)]
    pub warm: bool,
    pub timings: StartTimings,
}

/// A boot template: the saved state of a guest waiting in its initramfs,
/// which warm starts of VMs of this shape restore instead of booting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateInfo {
    /// Hash of everything the state depends on.
    pub key: String,
    pub kernel_id: String,
    pub kernel: String,
    pub vmm: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Made for VMs with a NIC.
    pub nic: bool,
    /// RFC 3339 UTC.
    pub made_at: String,
    /// Size of the saved state.
    pub state_bytes: u64,
    /// Time to boot to the wait and save, in ms.
    pub made_ms: f64,
    /// `ready`: starts of this shape restore it; `stale`: made with another
    /// agent, VMM or kernel than today's, so starts boot cold until the
    /// next one is made (which removes it). Empty in `template.json`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
}

/// `POST /v1/daemon/stop`: the daemon stops once this answer is sent and
/// the operations in flight have finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaemonStopReply {
    pub stopping: bool,
}
