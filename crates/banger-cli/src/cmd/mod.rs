//! The command tree: one module per command group, each holding its clap
//! arguments and its handlers. This file is the root of the tree and the
//! argument shapes several groups share.

mod config;
mod context;
mod cp;
mod daemon;
mod dial;
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
    /// The daemon to use: ssh://[user@]host[:port] (default: BANGER_HOST,
    /// else the current context, else this host's)
    #[arg(
        short = 'H',
        long,
        global = true,
        value_name = "ssh://[user@]host[:port]"
    )]
    host: Option<String>,
    /// The context to use (`banger context ls`; `default` is this host)
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
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
    /// Name remote hosts and choose the one commands go to
    #[command(subcommand)]
    Context(context::ContextCmd),
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    crate::client::select(cli.host, cli.context);
    match cli.command {
        Command::Vm(cmd) => vm::run(cmd).await,
        Command::Image(cmd) => image::run(cmd).await,
        Command::Kernel(cmd) => kernel::run(cmd).await,
        Command::Snapshot(cmd) => snapshot::run(cmd).await,
        Command::Warm(a) => warm::run(a).await,
        Command::Workspace(cmd) => workspace::run(cmd).await,
        Command::Config(cmd) => config::run(cmd).await,
        Command::Daemon(cmd) => daemon::run(cmd).await,
        Command::Doctor(f) => match remote()? {
            // The checks are of the host the daemon runs on.
            Some(t) => dial::on_remote(&t, &json_arg(&["doctor"], f.json)).await,
            None => doctor::run(f.json).await,
        },
        Command::System(system::SystemCmd::DialStdio(a)) => dial::dial_stdio(a).await,
        Command::System(cmd) => match remote()? {
            Some(t) => dial::on_remote(&t, &system::argv(&cmd)).await,
            None => system::run(cmd).await,
        },
        Command::Context(cmd) => context::run(cmd),
    }
}

/// The remote host commands go to, if not this one.
fn remote() -> Result<Option<crate::client::ssh::SshTarget>> {
    Ok(match crate::client::host()? {
        crate::client::Host::Ssh(t) => Some(t),
        crate::client::Host::Local => None,
    })
}

/// `words` with `--json` when asked.
fn json_arg(words: &[&str], json: bool) -> Vec<String> {
    let mut v: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
    if json {
        v.push("--json".into());
    }
    v
}
