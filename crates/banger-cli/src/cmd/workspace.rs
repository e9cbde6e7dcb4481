//! `banger workspace sync|export`: a host git checkout into a running VM
//! and the guest's work back as a host branch. The git and transfer logic
//! is `crate::workspace`; this file is arguments and output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use banger_api::VmRecord;
use banger_api::endpoints::VmsShow;
use clap::{Args, Subcommand};

use crate::client;
use crate::workspace::{self, HostRepo};

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Put a git checkout (history, uncommitted and untracked files) into a running VM
    Sync(SyncArgs),
    /// Bring a VM's commits and uncommitted changes back as a host branch
    Export(ExportArgs),
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    vm: String,
    /// Any directory inside the repository (default: the current one)
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where the repository goes in the guest (default: <workspace.guest_dir>/<repo-name>)
    #[arg(long = "workspace-path")]
    workspace_path: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    vm: String,
    /// Any directory inside the host repository (default: the current one)
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Host branch to create or update (default: banger/<vm>)
    #[arg(long)]
    branch: Option<String>,
    /// The repository's path in the guest (default: as sync chose it)
    #[arg(long = "workspace-path")]
    workspace_path: Option<String>,
    /// Overwrite the branch even if it moved since the last export
    #[arg(long)]
    force: bool,
}

pub async fn run(cmd: WorkspaceCmd) -> Result<ExitCode> {
    let config = banger_config::Config::load()?;
    match cmd {
        WorkspaceCmd::Sync(a) => {
            let repo = HostRepo::find(&a.dir)?;
            let dest = repo.guest_path(&config.workspace.guest_dir, a.workspace_path.as_deref())?;
            let vm = running_vm(&a.vm).await?;
            let report = tokio::task::spawn_blocking(move || workspace::sync(&repo, &vm.id, &dest))
                .await??;
            println!("{report}");
        }
        WorkspaceCmd::Export(a) => {
            let repo = HostRepo::find(&a.dir)?;
            let src = repo.guest_path(&config.workspace.guest_dir, a.workspace_path.as_deref())?;
            let vm = running_vm(&a.vm).await?;
            let branch = a.branch.unwrap_or_else(|| format!("banger/{}", vm.name));
            // Repeated verbatim in the --force hint of a refusal.
            let mut dir_arg = a.dir.display().to_string();
            if let Some(p) = &a.workspace_path {
                dir_arg.push_str(&format!(" --workspace-path {p}"));
            }
            let typed = a.vm.clone();
            let done = tokio::task::spawn_blocking(move || {
                workspace::export(&repo, &typed, &vm.name, &src, &branch, a.force, &dir_arg)
            })
            .await??;
            println!(
                "{} -> {} ({} commit(s) from the guest)",
                done.branch,
                &done.tip[..12],
                done.commits
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The VM's record (its name names the default branch).
async fn running_vm(reference: &str) -> Result<VmRecord> {
    let c = client::daemon().await?;
    c.call::<VmsShow>(&[reference], &()).await
}
