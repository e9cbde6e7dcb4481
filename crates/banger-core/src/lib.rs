//! The daemon's brain: the services that own images, kernels and VMs, on
//! top of the configuration and paths of `banger-config`.
//!
//! [`Services`] is the one surface the daemon's routes call; behind it each
//! service (kernels, images, VMs, boot, snapshots, host resources) owns its
//! lock and its slice of the store. Lifecycle operations are async (they
//! wait on VMMs and guest agents); the calls that only run tools and short
//! SQLite statements are synchronous, and the daemon runs them on blocking
//! threads.
//!
//! This crate never speaks SQL (that is `banger-store`), never runs
//! e2fsprogs directly (that is `banger-disk`) and never names a VMM binary's
//! flags (that is `banger-vmm`).

// Config, paths and host checks live in banger-config (the CLI needs them
// without the services); re-exported so `crate::config` etc. read as before.
pub use banger_config::{config, datadir, doctor, paths};

pub mod alloc;
pub mod boot;
pub mod egress;
pub mod error;
pub mod events;
pub mod file_sync;
pub mod guest;
pub mod guest_files;
pub mod idle;
pub mod images;
pub mod kernel_pull;
pub mod kernels;
mod lifecycle;
pub mod network;
pub mod ports;
mod registry;
pub mod remote;
pub mod resolve;
pub mod resources;
pub mod run_rules;
pub(crate) mod scratch;
pub mod services;
pub mod snapshots;
pub mod ssh;
pub mod tools;
pub mod vms;

pub use config::Config;
pub use error::{CoreError, CoreResult, ErrorKind};
pub use events::EventSink;
pub use paths::Layout;
pub use services::Services;
pub use tools::Tools;

/// RFC 3339 UTC timestamp of now, as stored in records.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
