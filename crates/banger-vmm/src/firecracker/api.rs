//! Typed Firecracker API requests, and the input rules the real binary
//! enforces.
//!
//! Each request body is a struct mirroring one definition of Firecracker's
//! `firecracker.yaml` (`deny_unknown_fields` on our side, optional fields
//! skipped when unset); `tests/firecracker_schema.rs` validates every body
//! [`launch_requests`] builds against that file. The file does not carry
//! every rule Firecracker applies (resource ids, vCPU counts with SMT, the
//! command-line size, socket path length), so each body also checks
//! itself ([`Body::check`]) before it becomes an [`ApiRequest`]: a spec the
//! real binary would refuse is refused here, naming the field, and
//! `tests/firecracker_real.rs` shows the real process refusing each of
//! them. One rule is banger's alone: Firecracker v1.16.1 takes
//! `guest_cid` 2, which its description and banger refuse (CID 2 is the
//! host's, so the guest could not reach it).
//! Sending is [`super::client`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::{DiskRole, LaunchSpec};
use crate::{Result, VmmError};

/// Most vCPUs Firecracker runs (`MAX_SUPPORTED_VCPUS`).
pub const MAX_VCPUS: u8 = 32;
/// Longest kernel command line on x86_64 (`CMDLINE_MAX_SIZE`, with its NUL).
pub const MAX_CMDLINE: usize = 2047;
/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest instance id (`--id`, `MAX_INSTANCE_ID_LEN`).
pub const MAX_INSTANCE_ID: usize = 64;
/// Longest network interface name (`IFNAMSIZ` less the NUL).
pub const MAX_IFNAME: usize = 15;

fn invalid(field: &str, why: impl std::fmt::Display) -> VmmError {
    VmmError::InvalidSpec(format!("firecracker {field}: {why}"))
}

/// An API resource id (`drive_id`, `iface_id`, the last path segment):
/// Firecracker answers 400 "API Resource IDs can only contain alphanumeric
/// characters and underscores" to anything else, so `banger-base` is
/// unrepresentable here. ASCII only, a subset of what it takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceId(String);

impl ResourceId {
    /// Checks `id` against Firecracker's rule.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        if id.is_empty() {
            return Err(invalid("resource id", "must not be empty"));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(invalid(
                "resource id",
                format!("{id:?} has {c:?}; only letters, digits and '_' are allowed"),
            ));
        }
        Ok(ResourceId(id))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        ResourceId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The drive id of a disk under Firecracker. QEMU keeps
/// [`DiskRole::id`] (a serial, where `-` is fine); Firecracker gets the
/// same name with `_`.
pub fn drive_id(role: DiskRole) -> ResourceId {
    ResourceId(role.id().replace('-', "_"))
}

/// The one NIC's id.
pub fn iface_id() -> ResourceId {
    ResourceId("eth0".into())
}

/// The `--id` of the Firecracker process: letters, digits and `-`, at
/// most 64 (Firecracker exits at start otherwise). Derived from the VM name,
/// with anything else replaced by `-`.
pub fn instance_id(vm_name: &str) -> String {
    let mut id: String = vm_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_INSTANCE_ID)
        .collect();
    if id.is_empty() {
        id.push_str("banger");
    }
    id
}

/// A request body, with the rules Firecracker applies to it beyond its
/// API description.
pub trait Body: Serialize {
    /// Refuses what the real binary would refuse.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// `PUT /machine-config` (`MachineConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// vCPUs: 1 to 32; with SMT, 1 or an even number.
    pub vcpu_count: u8,
    /// Memory in MiB, not 0.
    pub mem_size_mib: u32,
    /// Simultaneous multithreading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
}

impl Body for MachineConfig {
    fn check(&self) -> Result<()> {
        let n = self.vcpu_count;
        if n == 0 || n > MAX_VCPUS {
            return Err(invalid(
                "machine-config vcpu_count",
                format!("{n} is not between 1 and {MAX_VCPUS}"),
            ));
        }
        if self.smt == Some(true) && n > 1 && n % 2 == 1 {
            return Err(invalid(
                "machine-config vcpu_count",
                format!("{n} is odd; with smt it must be 1 or even"),
            ));
        }
        if self.mem_size_mib == 0 {
            return Err(invalid("machine-config mem_size_mib", "must not be 0"));
        }
        Ok(())
    }
}

/// `PUT /boot-source` (`BootSource`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Kernel on the host: an uncompressed ELF vmlinux on x86_64.
    pub kernel_image_path: String,
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Initrd on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

impl Body for BootSource {
    fn check(&self) -> Result<()> {
        if let Some(a) = &self.boot_args
            && a.len() > MAX_CMDLINE
        {
            return Err(invalid(
                "boot-source boot_args",
                format!("{} bytes, more than {MAX_CMDLINE}", a.len()),
            ));
        }
        Ok(())
    }
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    /// Blocking system calls (the default).
    Sync,
    /// io_uring.
    Async,
}

/// `PUT /drives/{drive_id}` (`Drive`, virtio-block form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Id, also in the path.
    pub drive_id: ResourceId,
    /// Always false: the root is assembled by the agent, not the kernel.
    pub is_root_device: bool,
    /// Image on the host.
    pub path_on_host: String,
    /// Read-only to the guest.
    pub is_read_only: bool,
    /// Block I/O engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
}

impl Body for Drive {}

/// `PUT /network-interfaces/{iface_id}` (`NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Id, also in the path.
    pub iface_id: ResourceId,
    /// Host tap (at most 15 bytes).
    pub host_dev_name: String,
    /// Guest MAC, `xx:xx:xx:xx:xx:xx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

impl Body for NetworkInterface {
    fn check(&self) -> Result<()> {
        let tap = &self.host_dev_name;
        if tap.is_empty() || tap.len() > MAX_IFNAME || tap.contains(['/', ' ']) {
            return Err(invalid(
                "network-interfaces host_dev_name",
                format!("{tap:?} is not a device name of 1 to {MAX_IFNAME} bytes"),
            ));
        }
        if let Some(mac) = &self.guest_mac {
            let parts: Vec<&str> = mac.split(':').collect();
            let ok = parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(invalid(
                    "network-interfaces guest_mac",
                    format!("{mac:?} is not xx:xx:xx:xx:xx:xx"),
                ));
            }
        }
        Ok(())
    }
}

/// `PUT /vsock` (`Vsock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Guest CID (>= 3).
    pub guest_cid: u32,
    /// Host socket of the hybrid vsock.
    pub uds_path: String,
}

impl Body for Vsock {
    fn check(&self) -> Result<()> {
        if self.guest_cid < 3 {
            return Err(invalid(
                "vsock guest_cid",
                format!("{} is reserved; it must be 3 or more", self.guest_cid),
            ));
        }
        socket_path("vsock uds_path", &self.uds_path)
    }
}

/// A Unix socket path Firecracker can bind.
pub(crate) fn socket_path(field: &str, p: &str) -> Result<()> {
    if p.len() > MAX_SOCKET_PATH {
        return Err(invalid(
            field,
            format!(
                "{p} is {} bytes, longer than a Unix socket path can be ({MAX_SOCKET_PATH})",
                p.len()
            ),
        ));
    }
    Ok(())
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// And warnings.
    Warning,
    /// And information.
    Info,
    /// And debugging.
    Debug,
    /// Everything.
    Trace,
}

/// `PUT /logger` (`Logger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Log file (must exist).
    pub log_path: String,
    /// Level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    /// Prefix lines with the level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
}

impl Body for Logger {}

/// `PUT /metrics` (`Metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Metrics file (must exist).
    pub metrics_path: String,
}

impl Body for Metrics {}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Boot the configured VM.
    InstanceStart,
    /// Press Ctrl+Alt+Del (i8042): a graceful-shutdown request to init.
    SendCtrlAltDel,
    /// Flush metrics now.
    FlushMetrics,
}

/// `PUT /actions` (`InstanceActionInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action.
    pub action_type: ActionType,
}

impl Body for Action {}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmRunState {
    /// Stop the vCPUs.
    Paused,
    /// Run them again.
    Resumed,
}

/// `PATCH /vm` (`Vm`): pause or resume a started VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// The state to reach.
    pub state: VmRunState,
}

impl Body for Vm {}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All of memory.
    Full,
    /// Only pages dirtied since the last snapshot (needs dirty tracking).
    Diff,
}

/// `PUT /snapshot/create` (`SnapshotCreateParams`): the VM must be paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Where the guest memory is written.
    pub mem_file_path: String,
    /// Where the microVM state is written.
    pub snapshot_path: String,
    /// Full or diff; Firecracker's default is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

impl Body for SnapshotCreate {
    fn check(&self) -> Result<()> {
        for (field, p) in [
            ("snapshot/create mem_file_path", &self.mem_file_path),
            ("snapshot/create snapshot_path", &self.snapshot_path),
        ] {
            if p.is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// Memory read (mapped privately) from a file.
    File,
    /// Page faults served by a userfaultfd process.
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// File or UFFD.
    pub backend_type: MemoryBackendType,
    /// The memory file, or the UFFD handler's socket.
    pub backend_path: String,
}

/// `NetworkOverride`: the tap a restored interface uses instead of the
/// one recorded in the snapshot (a fork has its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// Interface id as configured before the snapshot.
    pub iface_id: ResourceId,
    /// The new host tap.
    pub host_dev_name: String,
}

/// `VsockOverride`: the hybrid vsock socket of the restored VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// Host socket path.
    pub uds_path: String,
}

/// `PUT /snapshot/load` (`SnapshotLoadParams`): only on a fresh process,
/// before any configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    /// The microVM state file.
    pub snapshot_path: String,
    /// Where memory comes from (banger never sends the deprecated
    /// `mem_file_path`).
    pub mem_backend: MemoryBackend,
    /// Run the vCPUs once loaded; banger resumes itself afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// New taps for the snapshot's interfaces.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// New agent socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
}

impl Body for SnapshotLoad {
    fn check(&self) -> Result<()> {
        if self.snapshot_path.is_empty() {
            return Err(invalid("snapshot/load snapshot_path", "must not be empty"));
        }
        if self.mem_backend.backend_path.is_empty() {
            return Err(invalid(
                "snapshot/load mem_backend.backend_path",
                "must not be empty",
            ));
        }
        for o in &self.network_overrides {
            NetworkInterface {
                iface_id: o.iface_id.clone(),
                host_dev_name: o.host_dev_name.clone(),
                guest_mac: None,
            }
            .check()
            .map_err(|_| {
                invalid(
                    "snapshot/load network_overrides host_dev_name",
                    format!("{:?} is not a device name", o.host_dev_name),
                )
            })?;
        }
        if let Some(v) = &self.vsock_override {
            socket_path("snapshot/load vsock_override uds_path", &v.uds_path)?;
        }
        Ok(())
    }
}

/// `PUT /snapshot/create` of a full snapshot into `dir` (the file names
/// of [`crate::state_files`]).
pub fn snapshot_create(dir: &Path) -> Result<ApiRequest> {
    let p = |f: &str| dir.join(f).display().to_string();
    put(
        "/snapshot/create",
        &SnapshotCreate {
            mem_file_path: p(crate::state_files::FC_MEMORY),
            snapshot_path: p(crate::state_files::FC_STATE),
            snapshot_type: Some(SnapshotType::Full),
        },
    )
}

/// `PUT /snapshot/load` of the state in `dir` for the VM of `spec`: its
/// agent socket and tap replace the recorded ones; the VM stays paused.
pub fn snapshot_load(dir: &Path, spec: &LaunchSpec) -> Result<ApiRequest> {
    let p = |f: &str| dir.join(f).display().to_string();
    put(
        "/snapshot/load",
        &SnapshotLoad {
            snapshot_path: p(crate::state_files::FC_STATE),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: p(crate::state_files::FC_MEMORY),
            },
            resume_vm: Some(false),
            network_overrides: spec
                .tap
                .iter()
                .map(|t| NetworkOverride {
                    iface_id: iface_id(),
                    host_dev_name: t.clone(),
                })
                .collect(),
            vsock_override: Some(VsockOverride {
                uds_path: spec.agent_socket.display().to_string(),
            }),
        },
    )
}

/// One API call, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// `PUT`, `PATCH`, `GET`.
    pub method: &'static str,
    /// Request path, e.g. `/drives/banger_base`.
    pub path: String,
    /// JSON body.
    pub body: serde_json::Value,
}

pub(super) fn request(method: &'static str, path: String, body: &impl Body) -> Result<ApiRequest> {
    body.check()?;
    Ok(ApiRequest {
        method,
        path,
        // Serializing these plain structs cannot fail.
        body: serde_json::to_value(body).unwrap_or_default(),
    })
}

/// `PUT path` with a checked body.
pub fn put(path: impl Into<String>, body: &impl Body) -> Result<ApiRequest> {
    request("PUT", path.into(), body)
}

/// `PUT /actions` with `action_type`.
pub fn action(action_type: ActionType) -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path: "/actions".into(),
        body: serde_json::to_value(Action { action_type }).unwrap_or_default(),
    }
}

/// `PATCH /vm`: pause or resume.
pub fn set_vm_state(state: VmRunState) -> ApiRequest {
    ApiRequest {
        method: "PATCH",
        path: "/vm".into(),
        body: serde_json::to_value(Vm { state }).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_follow_firecrackers_rule() {
        for role in [DiskRole::Base, DiskRole::Overlay, DiskRole::Work] {
            let id = drive_id(role);
            assert!(ResourceId::new(id.as_str()).is_ok(), "{id}");
        }
        assert_eq!(drive_id(DiskRole::Base).as_str(), "banger_base");
        assert!(ResourceId::new(iface_id().as_str()).is_ok());
        for bad in ["banger-base", "", "a b", "x/y", "é"] {
            let e = ResourceId::new(bad).unwrap_err().to_string();
            assert!(e.contains("resource id"), "{e}");
        }
        let e = serde_json::from_str::<Drive>(
            r#"{"drive_id":"a-b","is_root_device":false,"path_on_host":"/x","is_read_only":true}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("only letters"), "{e}");
    }

    #[test]
    fn instance_ids_fit_the_binary() {
        assert_eq!(instance_id("web-1"), "web-1");
        assert_eq!(instance_id(&"x".repeat(80)).len(), MAX_INSTANCE_ID);
        assert_eq!(instance_id("a_b.c"), "a-b-c");
        assert_eq!(instance_id(""), "banger");
    }

    #[test]
    fn bodies_refuse_what_firecracker_refuses() {
        let mc = |vcpu_count, smt| MachineConfig {
            vcpu_count,
            mem_size_mib: 128,
            smt,
        };
        assert!(mc(1, Some(true)).check().is_ok());
        assert!(mc(3, Some(false)).check().is_ok());
        assert!(mc(32, None).check().is_ok());
        for bad in [mc(0, None), mc(33, None), mc(3, Some(true))] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains("vcpu_count"), "{e}");
        }
        let e = put(
            "/vsock",
            &Vsock {
                guest_cid: 2,
                uds_path: "/s".into(),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("guest_cid"), "{e}");
        let long = format!("/{}", "d".repeat(MAX_SOCKET_PATH));
        let e = Vsock {
            guest_cid: 3,
            uds_path: long,
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("uds_path"), "{e}");
        let nic = |tap: &str, mac: Option<&str>| NetworkInterface {
            iface_id: iface_id(),
            host_dev_name: tap.into(),
            guest_mac: mac.map(Into::into),
        };
        assert!(nic("tap-vm1", Some("06:00:ac:10:00:02")).check().is_ok());
        assert!(nic("a-very-long-tap-name", None).check().is_err());
        assert!(nic("tap0", Some("06:00:ac:10:00")).check().is_err());
        let e = BootSource {
            kernel_image_path: "/k".into(),
            boot_args: Some("x".repeat(MAX_CMDLINE + 1)),
            initrd_path: None,
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("boot_args"), "{e}");
    }
}
