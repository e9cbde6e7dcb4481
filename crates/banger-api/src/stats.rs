//! `GET /v1/vms/{ref}/stats`: one sample of a VM's resource usage, the
//! guest's own report (from its agent) beside what the host sees of it
//! (the VMM process, the disk files, the tap). Counters are cumulative;
//! a client takes two samples and divides by `sampled_at_ms`'s difference
//! for rates (CPU %, bytes per second).

use serde::{Deserialize, Serialize};

/// One sample. `G` is the guest's report (banger-proto's `GuestStats`),
/// kept generic so this crate does not depend on the agent protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmStats<G> {
    pub id: String,
    pub name: String,
    /// `running`, `stopped`, `paused`...: as `vm ls` shows it.
    pub state: String,
    /// Host wall clock of the sample, ms since the Unix epoch.
    pub sampled_at_ms: u64,
    /// The guest's report; absent when the VM is not running or its agent
    /// did not answer (then `guest_error` says why).
    #[cfg_attr(feature = "openapi", schema(schema_with = nullable_guest))]
    pub guest: Option<G>,
    #[serde(default)]
    pub guest_error: Option<String>,
    /// The VMM process while it runs.
    pub vmm: Option<VmmUsage>,
    /// The VM's disk image files on the host.
    pub disk_files: Vec<DiskFile>,
    /// The VM's NIC, from the guest's point of view (the tap's counters
    /// swapped); absent without host networking.
    pub net: Option<NetUsage>,
}

/// The schema of `guest`: null or banger-proto's `GuestStats` (the one `G`
/// the daemon sends). Written by hand because utoipa drops the null of an
/// `Option` whose inner type is a type parameter (juhaku/utoipa#1468),
/// which made every stopped VM's sample break its own schema.
#[cfg(feature = "openapi")]
fn nullable_guest() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(Ref::from_schema_name("GuestStats"))
        .description(Some(
            "The guest's report; null when the VM is not running or its agent did not answer.",
        ))
        .build();
    Schema::OneOf(one_of)
}

/// The VMM process on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmmUsage {
    pub pid: i32,
    /// User plus system CPU time since it started.
    pub cpu_ms: u64,
    /// Resident memory (VmRSS).
    pub rss_bytes: u64,
}

/// A disk image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskFile {
    /// `overlay` or `work`.
    pub role: String,
    pub path: String,
    /// Apparent size: the disk's capacity.
    pub size_bytes: u64,
    /// Blocks allocated on the host (the files are sparse).
    pub allocated_bytes: u64,
}

/// Bytes through the VM's NIC since its tap was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetUsage {
    /// The host tap.
    pub interface: String,
    /// Received by the guest.
    pub rx_bytes: u64,
    /// Sent by the guest.
    pub tx_bytes: u64,
}
