//! The command tree: one module per command group, each holding its clap
//! arguments and its handlers. This file is the root of the tree and the
//! argument shapes several groups share.

mod config;
mod cp;
mod daemon;
mod doctor;
mod forward;
mod image;
mod kernel;
mod ports;
mod run;
mod shell;
mod snapshot;
mod ssh;
mod stats;
pub(crate) mod system;
mod vm;
mod warm;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::args::JsonFlag;

#[derive(Parser, Debug)]
#[command(name = "banger", version, about = "MicroVMs that feel like containers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Manage VMs
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Manage images (read-only root filesystems)
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Manage kernels
    #[command(subcommand)]
    Kernel(kernel::KernelCmd),
    /// Saved VM states (`vm snapshot` makes them, `vm restore` uses them)
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Make (or list) the boot templates warm starts restore
    Warm(warm::WarmArgs),
    /// Sync git checkouts into VMs and export the guest's work as branches
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCmd),
    /// Show the effective configuration
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Control the daemon
    #[command(subcommand)]
    Daemon(daemon::DaemonCmd),
    /// Check what this host can do, with the fix for each problem
    Doctor(JsonFlag),
    /// Install banger's root helper and daemon as system services
    #[command(subcommand)]
    System(system::SystemCmd),
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Vm(cmd) => vm::run(cmd).await,
        Command::Image(cmd) => image::run(cmd).await,
        Command::Kernel(cmd) => kernel::run(cmd).await,
        Command::Snapshot(cmd) => snapshot::run(cmd).await,
        Command::Warm(a) => warm::run(a).await,
        Command::Workspace(cmd) => workspace::run(cmd).await,
        Command::Config(cmd) => config::run(cmd).await,
        Command::Daemon(cmd) => daemon::run(cmd).await,
        Command::Doctor(f) => doctor::run(f.json).await,
        Command::System(cmd) => system::run(cmd).await,
    }
}
