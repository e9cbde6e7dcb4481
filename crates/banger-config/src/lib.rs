//! What both the CLI and the daemon need to know about an installation
//! before any daemon answers: the user's `config.toml` with every default
//! ([`config`], with the `[[file_sync]]` home rule in [`file_sync`]), every path derived from the data dir ([`paths`], the
//! socket included; [`datadir`] says whether a data dir is the user's
//! alone), and the host checks of `banger doctor` ([`doctor`]),
//! which the CLI runs itself because it is what people run when the daemon
//! will not start.
//!
//! It holds no service and opens no database; `banger-core` builds on it
//! and re-exports these modules, so the CLI can depend on this crate and
//! `banger-api` alone.

pub mod apt;
pub mod cgroups;
pub mod config;
pub mod datadir;
pub mod doctor;
pub mod file_sync;
pub mod paths;

pub use config::Config;
pub use paths::Layout;
