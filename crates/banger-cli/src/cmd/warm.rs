//! `banger warm [KERNEL|IMAGE] [--cpus N] [--memory SIZE]` makes the boot
//! template that warm starts of that machine shape restore instead of
//! booting; `banger warm --list` lists the templates there are.

use std::process::ExitCode;

use anyhow::Result;
use banger_api::endpoints::{TemplatesList, TemplatesMake};
use banger_api::{ByteSize, TemplateInfo, WarmRequest};
use clap::Args;

use crate::client;
use crate::input::parse_memory;
use crate::output;

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// A kernel, or an image (its VMs boot the default kernel); default:
    /// the default kernel
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), conflicts_with = "list")]
    target: Option<String>,
    /// vCPUs of the VMs it serves (default: the [vm] default)
    #[arg(long = "cpus", conflicts_with = "list")]
    cpus: Option<u32>,
    /// Memory of the VMs it serves, e.g. 512M (default: the [vm] default)
    #[arg(long, conflicts_with = "list")]
    memory: Option<String>,
    /// List the boot templates instead
    #[arg(long)]
    list: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(a: WarmArgs) -> Result<ExitCode> {
    let c = client::daemon().await?;
    if a.list {
        let list = c.call::<TemplatesList>(&[], &()).await?;
        if a.json {
            output::json(&list)?;
        } else {
            let rows: Vec<Vec<String>> = list.iter().map(row).collect();
            output::table(
                &[
                    "KEY", "KERNEL", "VMM", "CPUS", "MEMORY", "NIC", "STATE", "SIZE", "MADE",
                ],
                &rows,
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let req = WarmRequest {
        target: a.target,
        vcpus: a.cpus,
        memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
    };
    let t = c.call::<TemplatesMake>(&[], &req).await?;
    if a.json {
        output::json(&t)?;
    } else {
        println!(
            "template {} for {} ({} vCPU, {}{}): {} saved in {:.0} ms",
            t.key,
            t.kernel,
            t.vcpus,
            ByteSize(t.memory_mib * ByteSize::MIB),
            if t.nic { ", NIC" } else { "" },
            ByteSize(t.state_bytes),
            t.made_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn row(t: &TemplateInfo) -> Vec<String> {
    vec![
        t.key.clone(),
        t.kernel.clone(),
        t.vmm.clone(),
        t.vcpus.to_string(),
        ByteSize(t.memory_mib * ByteSize::MIB).to_string(),
        if t.nic { "yes" } else { "no" }.to_string(),
        t.state.clone(),
        ByteSize(t.state_bytes).to_string(),
        t.made_at.clone(),
    ]
}
