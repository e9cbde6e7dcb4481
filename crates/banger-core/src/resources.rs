//! The per-VM host resource lifecycle: what a VM holds on the host only
//! while it runs (today its NIC: the tap and its `<name>.vm` record, see
//! [`crate::network`]), taken and given back at fixed points of
//! [`crate::boot`]:
//!
//! - [`HostResources::acquire`] before the VMM is spawned; on any error
//!   nothing is held.
//! - [`HostResources::release`] on every path that ends a run: stop, kill,
//!   a VM found dead (settle), a failed start, `vm rm`. Idempotent.
//! - [`HostResources::reconcile`] at daemon start: re-adopt what live VMs
//!   hold, release what dead ones held, and sweep host resources named for
//!   no live VM (a daemon killed mid-start).
//!
//! Invariant: every host resource is named from its VM's id, so the host
//! itself is the record of what exists and a crashed daemon's leftovers
//! are always found; outside a run, a VM holds nothing.

use std::collections::HashSet;
use std::sync::OnceLock;

use banger_api::VmRecord;
use banger_config::config::NetworkMode;

use crate::error::CoreResult;
use crate::network::{NetworkService, Nic};

/// What a VM holds while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acquired {
    pub nic: Option<Nic>,
}

/// The host resources of every VM. Networking is brought up once, after
/// the daemon's runtime exists ([`HostResources::set_network`]); until
/// then VMs would boot without a NIC.
#[derive(Debug, Default)]
pub struct HostResources {
    network: OnceLock<NetworkService>,
}

impl HostResources {
    /// Install the network picked at daemon start; a second call is ignored.
    pub fn set_network(&self, network: NetworkService) {
        let _ = self.network.set(network);
    }

    pub fn network(&self) -> &NetworkService {
        static NOT_STARTED: OnceLock<NetworkService> = OnceLock::new();
        self.network.get().unwrap_or_else(|| {
            NOT_STARTED.get_or_init(|| {
                NetworkService::off(NetworkMode::Auto, "host networking was not started")
            })
        })
    }

    /// Take what `vm` needs to run; `with_nic = false` for a VM created
    /// with `--network none`.
    pub async fn acquire(&self, vm: &VmRecord, with_nic: bool) -> CoreResult<Acquired> {
        let nic = if with_nic {
            self.network().acquire(vm).await?
        } else {
            None
        };
        Ok(Acquired { nic })
    }

    pub async fn release(&self, vm: &VmRecord) {
        self.network().release(vm).await;
    }

    /// At daemon start: `live` are the VMs whose VMM still runs (their
    /// resources are re-adopted), `dead` those recorded running whose VMM
    /// is gone (released). Then whatever is named for no live VM goes.
    pub async fn reconcile(&self, live: &[&VmRecord], dead: &[&VmRecord]) -> Vec<String> {
        for vm in live {
            self.network().adopt(vm).await;
        }
        for vm in dead {
            self.release(vm).await;
        }
        let ids: HashSet<String> = live.iter().map(|v| v.id.clone()).collect();
        self.network()
            .sweep(&ids)
            .await
            .into_iter()
            .map(|t| format!("removed leftover tap {t}"))
            .collect()
    }
}
