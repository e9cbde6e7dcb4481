//! Snapshots on the wire: what a saved VM state *is*, and the requests that
//! make one, restore it and fork a VM.
//!
//! A snapshot is a running VM frozen at one instant: the VMM's memory and
//! device state plus point-in-time copies of the VM's overlay and work
//! disks, with what restoring it needs (kernel, image, agent, VMM, spec).

use serde::{Deserialize, Serialize};

use crate::model::VmSpec;

/// Where a snapshot is in its life. Only `ready` snapshots are whole; a
/// `saving` one is being written, and one left `saving` by a daemon that
/// died is removed with its files when the next daemon starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Its files are being written (the name is taken).
    Saving,
    /// Complete: it can be restored.
    Ready,
}

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Saving => "saving",
            SnapshotState::Ready => "ready",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "saving" => Some(SnapshotState::Saving),
            "ready" => Some(SnapshotState::Ready),
            _ => None,
        }
    }
}

/// A saved VM state, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotRecord {
    /// 16 lowercase hex characters.
    pub id: String,
    /// Unique among snapshots; a DNS label.
    pub name: String,
    /// The VM it was taken of (it may have been removed since).
    pub source_vm_id: String,
    /// That VM's name when the snapshot was taken.
    pub source_vm_name: String,
    /// Kernel and image the saved guest runs; restore refuses when either
    /// is gone.
    pub kernel_id: String,
    pub image_id: String,
    /// Identity of the guest agent (and initramfs) the saved guest runs:
    /// restore refuses when today's differs, since the restored guest keeps
    /// running the saved one.
    pub agent: String,
    /// The saved agent's version, as it reported it.
    pub agent_version: String,
    /// The VMM that saved it (`qemu`, `firecracker`): its state files load
    /// only into the same VMM.
    pub vmm: String,
    /// vCPUs, memory and disk sizes of the saved machine.
    pub spec: VmSpec,
    /// Whether the saved machine has a NIC (a restore must have one too).
    pub has_nic: bool,
    /// Directory holding the state files and disk copies.
    pub dir: String,
    /// Bytes of the VMM's state files (memory and devices).
    pub state_bytes: u64,
    /// Bytes the disk copies occupy (allocated, holes not counted).
    pub disk_bytes: u64,
    pub state: SnapshotState,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// `POST /v1/vms/{ref}/snapshot`: the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmSnapshotRequest {
    /// The snapshot's name; `<vm>-<n>` when absent.
    pub name: Option<String>,
    /// Leave the VM paused after the save (it is paused during it).
    pub keep_paused: bool,
}

/// `POST /v1/snapshots/{ref}/restore`: the body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VmRestoreRequest {
    /// A new VM of this name (new IP, MAC, CID and host key). Absent: the
    /// snapshot's source VM, which must exist and be stopped, gets the
    /// saved disks and state back.
    pub name: Option<String>,
}

/// `POST /v1/vms/{ref}/fork`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VmForkRequest {
    /// The new VM's name.
    pub name: String,
}
