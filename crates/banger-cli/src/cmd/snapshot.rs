//! `banger snapshot ls|show|rm`, and the VM commands that make and use
//! snapshots: `vm snapshot`, `vm restore`, `vm fork` (their arguments live
//! here; `cmd/vm.rs` only registers them).

use std::process::ExitCode;

use anyhow::Result;
use banger_api::endpoints::{
    SnapshotsList, SnapshotsRestore, SnapshotsRm, SnapshotsShow, VmsFork, VmsSnapshot,
};
use banger_api::{ByteSize, SnapshotRecord, VmForkRequest, VmRestoreRequest, VmSnapshotRequest};
use banger_api::{Endpoint, NoQuery, StartReport};
use clap::{Args, Subcommand};

use crate::args::{JsonFlag, Ref};
use crate::client;
use crate::output;
use crate::records::{create_and_print, fetch_for_show, remove_each};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// List snapshots (one still being saved shows as `saving`: its name
    /// is taken, and it can be restored or removed once it is `ready`)
    #[command(alias = "list")]
    Ls(JsonFlag),
    /// Show one snapshot
    Show(Ref),
    /// Remove snapshots and their files (VMs restored from one keep
    /// running: a restore copies the disks and reads the state only while
    /// it loads)
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        references: Vec<String>,
    },
}

/// `vm snapshot VM [--name S]`.
#[derive(Args, Debug)]
pub struct VmSnapshotArgs {
    /// The running VM
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// The snapshot's name (default: VM-N)
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: Option<String>,
    /// Leave the VM paused after the save
    #[arg(long)]
    keep_paused: bool,
    #[arg(long)]
    json: bool,
}

/// `vm restore S [--name NEW]`.
#[derive(Args, Debug)]
pub struct VmRestoreArgs {
    /// The snapshot
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    snapshot: String,
    /// Restore as a new VM of this name (default: the stopped source VM)
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: Option<String>,
    #[arg(long)]
    json: bool,
}

/// `vm fork VM NEW`.
#[derive(Args, Debug)]
pub struct VmForkArgs {
    /// The running VM
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    /// The new VM's name
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: SnapshotCmd) -> Result<ExitCode> {
    match cmd {
        SnapshotCmd::Ls(f) => {
            let c = client::daemon().await?;
            let list = c.call::<SnapshotsList>(&[], &()).await?;
            if f.json {
                output::json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.id.clone(),
                            s.source_vm_name.clone(),
                            s.state.as_str().to_owned(),
                            ByteSize(s.state_bytes + s.disk_bytes).to_string(),
                            s.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "VM", "STATE", "SIZE", "CREATED"], &rows);
            }
        }
        SnapshotCmd::Show(r) => {
            if let Some(s) = fetch_for_show::<SnapshotsShow>(&r).await? {
                show(&s);
            }
        }
        SnapshotCmd::Rm { references } => {
            let c = client::daemon().await?;
            return remove_each::<SnapshotsRm>(&c, &references, &NoQuery {}, |s| &s.name).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(s: &SnapshotRecord) {
    output::fields(&[
        ("name", s.name.clone()),
        ("id", s.id.clone()),
        ("state", s.state.as_str().to_owned()),
        ("vm", format!("{} ({})", s.source_vm_name, s.source_vm_id)),
        ("vmm", s.vmm.clone()),
        ("image", s.image_id.clone()),
        ("kernel", s.kernel_id.clone()),
        ("agent", format!("{} ({})", s.agent_version, s.agent)),
        ("cpus", s.spec.vcpus.to_string()),
        (
            "memory",
            ByteSize(s.spec.memory_mib * ByteSize::MIB).to_string(),
        ),
        ("state size", ByteSize(s.state_bytes).to_string()),
        ("disk size", ByteSize(s.disk_bytes).to_string()),
        ("dir", s.dir.clone()),
        ("created", s.created_at.clone()),
    ]);
}

pub async fn snapshot(a: VmSnapshotArgs) -> Result<ExitCode> {
    let req = VmSnapshotRequest {
        name: a.name,
        keep_paused: a.keep_paused,
    };
    create_and_print::<VmsSnapshot>(&[&a.reference], &req, a.json, |s| &s.name).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(a: VmRestoreArgs) -> Result<ExitCode> {
    let req = VmRestoreRequest { name: a.name };
    started::<SnapshotsRestore>(&[&a.snapshot], &req, a.json).await
}

pub async fn fork(a: VmForkArgs) -> Result<ExitCode> {
    let req = VmForkRequest { name: a.name };
    started::<VmsFork>(&[&a.reference], &req, a.json).await
}

/// A long call answering a start report; prints the VM's name.
async fn started<E: Endpoint<Response = StartReport>>(
    params: &[&str],
    body: &E::Request,
    json: bool,
) -> Result<ExitCode> {
    create_and_print::<E>(params, body, json, |r| &r.vm.name).await?;
    Ok(ExitCode::SUCCESS)
}
