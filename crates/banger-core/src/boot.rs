//! Running VMs: start, stop, kill, exec, logs, and the reconcile that
//! re-adopts live VMs when the daemon starts.
//!
//! What is momentarily true about a running VM (VMM pid and start time,
//! sockets) is a `VmHandles`, kept in memory and in the VM's
//! `handles.json` so a restarted daemon finds its VMs again. Liveness is
//! judged only by the driver's `is_alive` (pid + start time). The SQLite
//! record holds the desired state, which this module flips under the VM's
//! lock: to `running` before the VMM is spawned (so `vm rm` refuses a VM
//! that is booting) and back to `stopped` once it is gone.
//!
//! One [`BootService`] (`service.rs`), its methods split by concern:
//! `driver.rs` (which VMM), `handles.rs` (momentary truth and liveness),
//! `agent.rs` (the agent connections), `confine.rs` (each VM's cgroup and
//! what confines its VMM), `launch.rs` (start and restore),
//! `stop.rs`, `reconcile.rs`, `initramfs.rs`, `memory.rs` (balloon
//! resizes), `pause.rs`, `snapshot.rs`
//! `template.rs` (warm starts) and `ram_cache.rs` (the templates' RAM
//! the daemon holds for them).

mod agent;
mod confine;
mod console;
mod driver;
mod handles;
mod initramfs;
mod launch;
mod memory;
mod pause;
mod ram_cache;
mod reconcile;
mod service;
mod snapshot;
mod stop;
mod suspend;
pub mod template;

// The answer of a start is a wire type; re-exported for the core's callers.
pub use banger_api::{StartReport, StartTimings};
pub use driver::select_driver;
pub use service::{BootService, DEFAULT_STOP_TIMEOUT};
pub use snapshot::Saved;
pub use stop::Stopping;
pub use suspend::Woken;
