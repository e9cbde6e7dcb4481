//! Firecracker's balloon: memory the guest gives back to the host.
//!
//! Configured before boot (`PUT /balloon`, `Balloon`) with free page
//! reporting on, so pages the guest frees return to the host without
//! asking; resized while the VM runs (`PATCH /balloon`, `BalloonUpdate`)
//! for `vm set --memory`. Without `deflate_on_oom` the guest's driver
//! takes the inflated pages out of its total, so `MemTotal` shows the new
//! size, as under QEMU.

use serde::{Deserialize, Serialize};

use super::api::{ApiRequest, Body, put};
use crate::Result;

/// `PUT /balloon` (`Balloon`): before `InstanceStart` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balloon {
    /// Target balloon size in MiB: memory taken from the guest.
    pub amount_mib: u32,
    /// Give pages back to the guest when it runs short (off: a resize is
    /// a promise to the host).
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; 0 turns statistics off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u32>,
    /// The guest reports pages it frees, and Firecracker drops them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_page_reporting: Option<bool>,
}

impl Body for Balloon {}

/// `PATCH /balloon` (`BalloonUpdate`): a new target while the VM runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
}

impl Body for BalloonUpdate {}

/// The balloon every banger VM boots with: empty, free page reporting on.
pub fn configure() -> Result<ApiRequest> {
    put(
        "/balloon",
        &Balloon {
            amount_mib: 0,
            deflate_on_oom: false,
            stats_polling_interval_s: None,
            free_page_reporting: Some(true),
        },
    )
}

/// `PATCH /balloon` leaving the guest `target_mib` of the `booted_mib` it
/// started with.
pub fn resize(booted_mib: u32, target_mib: u32) -> Result<ApiRequest> {
    let body = BalloonUpdate {
        amount_mib: booted_mib.saturating_sub(target_mib),
    };
    body.check()?;
    Ok(ApiRequest {
        method: "PATCH",
        path: "/balloon".into(),
        body: serde_json::to_value(body).unwrap_or_default(),
    })
}
