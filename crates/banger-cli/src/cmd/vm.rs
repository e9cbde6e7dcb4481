//! `banger vm`: create, list, show, change, rebase, remove and the
//! lifecycle (start, stop, restart, kill, pause, resume, suspend, logs). `exec` and
//! `run` live in `run.rs`, `ssh`, `ssh-config` and `proxy` in `ssh.rs`, `shell` in `shell.rs`.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::endpoints::{
    ImagesList, VmsCreate, VmsKill, VmsList, VmsLogs, VmsPause, VmsRebase, VmsRestart, VmsResume,
    VmsRm, VmsSet, VmsShow, VmsStop, VmsSuspend,
};
use banger_api::{
    ByteSize, Endpoint, VmCreateRequest, VmRecord, VmRmQuery, VmSetRequest, VmStopRequest,
};
use clap::{Args, Subcommand};

use crate::args::{JsonFlag, Ref};
use crate::client::{self};
use crate::input::{parse_memory, parse_size};
use crate::output::{self, Progress};
use crate::records::{create_and_print, fetch_for_show, remove_each};

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Create a VM (records and disks; it is not started)
    Create(VmCreateArgs),
    /// List VMs
    #[command(alias = "list")]
    Ls(JsonFlag),
    /// Show one VM
    Show(Ref),
    /// Change a VM's CPUs, memory or work disk size
    Set(VmSetArgs),
    /// Remove VMs and their disks
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        references: Vec<String>,
        /// Kill running VMs first
        #[arg(short, long)]
        force: bool,
    },
    /// Boot a VM and wait until its agent answers (warm, from a boot
    /// template of its shape, when there is one)
    Start {
        #[command(flatten)]
        r: Ref,
        /// Boot even when a boot template could restore it
        #[arg(long)]
        cold: bool,
    },
    /// Shut a VM down cleanly, killing it after --timeout seconds
    Stop {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Stop then start
    Restart {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Kill a VM's VMM at once
    Kill {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Freeze a running VM's vCPUs (memory and devices stay as they are)
    Pause {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Run a paused VM again (or wake a suspended one)
    Resume {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Save a running VM to disk and end its VMM; any use wakes it
    /// (what --idle-suspend does after an idle period)
    Suspend {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Move a stopped VM onto another image, keeping /root, name, IP, MAC and keys
    /// (a fresh overlay: changes outside /root are dropped)
    Rebase {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        image: String,
    },
    /// Save a running VM's memory, devices and disks as a snapshot
    Snapshot(super::snapshot::VmSnapshotArgs),
    /// Run a VM from a snapshot: its stopped source VM, or a new one (--name)
    Restore(super::snapshot::VmRestoreArgs),
    /// Copy a running VM into a new running one (new name, IP, MAC, host key)
    Fork(super::snapshot::VmForkArgs),
    /// Print a VM's serial console
    Logs {
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        reference: String,
    },
    /// Run a command in a running VM
    Exec(super::run::ExecArgs),
    /// Create a VM, start it, run a command in it and return its exit code
    Run(super::run::RunArgs),
    /// OpenSSH into a running VM as root (managed key, strict host key)
    Ssh(super::ssh::SshArgs),
    /// Print an ~/.ssh/config block for VMs (ssh, scp, rsync -e ssh)
    SshConfig(super::ssh::SshConfigArgs),
    /// Splice stdin/stdout to a TCP port in the guest (an ssh ProxyCommand)
    Proxy(super::ssh::ProxyArgs),
    /// A login shell in a running VM through the agent (no sshd needed)
    Shell(super::shell::ShellArgs),
    /// The guest's listening sockets, with a URL per TCP port
    Ports(super::ports::PortsArgs),
    /// Copy files and trees between the host and a VM (docker cp rules)
    Cp(super::cp::CpArgs),
    /// Forward host TCP ports to guest ports through the agent, until Ctrl-C
    Forward(super::forward::ForwardArgs),
    /// Resource usage of VMs: CPU, memory, disks, network
    Stats(super::stats::StatsArgs),
}

#[derive(Args, Debug)]
pub struct VmCreateArgs {
    /// Image name or id prefix (default: config's default_image, or the only image)
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    image: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    kernel: Option<String>,
    /// Number of vCPUs
    #[arg(long = "cpus")]
    cpus: Option<u32>,
    /// Memory, e.g. 2G or 512M (a bare number is MiB)
    #[arg(long)]
    memory: Option<String>,
    /// Size of the persistent /root disk, e.g. 16G
    #[arg(long)]
    work_disk_size: Option<String>,
    /// Size of the writable layer over the image, e.g. 8G
    #[arg(long)]
    overlay_disk_size: Option<String>,
    #[command(flatten)]
    net: super::ports::NetArgs,
    /// Suspend the VM after this long without use (30s, 10m, 1h; off);
    /// default: config's vm.idle_suspend
    #[arg(long, value_name = "DURATION", value_parser = banger_api::validate::idle_suspend)]
    idle_suspend: Option<u64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct VmSetArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    #[arg(long = "cpus")]
    cpus: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    /// Grow the work disk (stopped VMs only; never shrinks)
    #[arg(long)]
    work_disk_size: Option<String>,
    /// Suspend the VM after this long without use (30s, 10m, 1h; off)
    #[arg(long, value_name = "DURATION", value_parser = banger_api::validate::idle_suspend)]
    idle_suspend: Option<u64>,
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: VmCmd) -> Result<ExitCode> {
    match cmd {
        VmCmd::Create(a) => {
            if let Some(n) = &a.name {
                banger_api::validate::vm_name(n).map_err(|e| anyhow!(e))?;
            }
            let req = VmCreateRequest {
                image: a.image,
                name: a.name,
                kernel: a.kernel,
                vcpus: a.cpus,
                memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
                overlay_disk_size: a.overlay_disk_size.as_deref().map(parse_size).transpose()?,
                work_disk_size: a.work_disk_size.as_deref().map(parse_size).transpose()?,
                ports: a.net.ports,
                network: a.net.network,
                egress: a.net.egress,
                idle_suspend_secs: a.idle_suspend,
            };
            create_and_print::<VmsCreate>(&[], &req, a.json, |vm| &vm.name).await?;
        }
        VmCmd::Ls(f) => {
            let c = client::daemon().await?;
            let vms = c.call::<VmsList>(&[], &()).await?;
            if f.json {
                output::json(&vms)?;
            } else {
                let images = c.call::<ImagesList>(&[], &()).await?;
                let image_name = |id: &str| {
                    images
                        .iter()
                        .find(|i| i.id == id)
                        .map(|i| i.name.clone())
                        .unwrap_or_else(|| id.to_string())
                };
                let rows: Vec<Vec<String>> = vms
                    .iter()
                    .map(|v| {
                        vec![
                            v.name.clone(),
                            v.id[..12].to_string(),
                            v.state_label().to_string(),
                            image_name(&v.image_id),
                            if v.no_network.is_some() {
                                "-".to_string()
                            } else {
                                v.guest_ip.clone()
                            },
                            v.spec.vcpus.to_string(),
                            ByteSize(v.spec.memory_mib * ByteSize::MIB).to_string(),
                            ByteSize(v.spec.work_disk_bytes).to_string(),
                            super::ports::ports_column(v),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NAME",
                        "ID",
                        "STATE",
                        "IMAGE",
                        "IP",
                        "CPUS",
                        "MEMORY",
                        "WORK DISK",
                        "PORTS",
                    ],
                    &rows,
                );
            }
        }
        VmCmd::Show(r) => {
            let Some(v) = fetch_for_show::<VmsShow>(&r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            show_vm(&v);
        }
        VmCmd::Set(a) => {
            let req = VmSetRequest {
                vcpus: a.cpus,
                memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
                work_disk_size: a.work_disk_size.as_deref().map(parse_size).transpose()?,
                idle_suspend_secs: a.idle_suspend,
            };
            let c = client::daemon().await?;
            let v = c.call::<VmsSet>(&[&a.reference], &req).await?;
            if a.json {
                output::json(&v)?;
            } else {
                show_vm(&v);
            }
        }
        VmCmd::Rm { references, force } => {
            let c = client::daemon().await?;
            let query = VmRmQuery { force };
            return remove_each::<VmsRm>(&c, &references, &query, |vm| &vm.name).await;
        }
        VmCmd::Start { r, cold } => {
            let c = client::daemon().await?;
            let report = super::run::start(&c, &r.reference, cold).await?;
            if r.json {
                output::json(&report)?;
            } else {
                println!("{}", report.vm.name);
            }
        }
        VmCmd::Stop { reference, timeout } => {
            let c = client::daemon().await?;
            let body = VmStopRequest {
                timeout_secs: Some(timeout),
            };
            let vm = c.call::<VmsStop>(&[&reference], &body).await?;
            println!("{}", vm.name);
        }
        VmCmd::Restart { reference, timeout } => {
            let c = client::daemon().await?;
            let body = VmStopRequest {
                timeout_secs: Some(timeout),
            };
            let p = Progress::new();
            let report = c
                .stream::<VmsRestart>(&[&reference], &body, |e| p.event(e))
                .await?;
            drop(p);
            println!("{}", report.vm.name);
        }
        VmCmd::Kill { reference } => {
            let c = client::daemon().await?;
            let vm = c.call::<VmsKill>(&[&reference], &()).await?;
            println!("{}", vm.name);
        }
        VmCmd::Pause { reference } => lifecycle::<VmsPause>(&reference).await?,
        VmCmd::Resume { reference } => lifecycle::<VmsResume>(&reference).await?,
        VmCmd::Suspend { reference } => lifecycle::<VmsSuspend>(&reference).await?,
        VmCmd::Rebase { reference, image } => {
            let req = banger_api::VmRebaseRequest { image };
            create_and_print::<VmsRebase>(&[&reference], &req, false, |vm| &vm.name).await?;
        }
        VmCmd::Logs { reference } => {
            let c = client::daemon().await?;
            let text = c.text::<VmsLogs>(&[&reference]).await?;
            std::io::Write::write_all(&mut std::io::stdout(), &text)?;
        }
        VmCmd::Snapshot(a) => return super::snapshot::snapshot(a).await,
        VmCmd::Restore(a) => return super::snapshot::restore(a).await,
        VmCmd::Fork(a) => return super::snapshot::fork(a).await,
        VmCmd::Exec(a) => return super::run::exec(a).await,
        VmCmd::Run(a) => return super::run::run(a).await,
        VmCmd::Ssh(a) => return super::ssh::ssh(a).await,
        VmCmd::SshConfig(a) => return super::ssh::ssh_config(a).await,
        VmCmd::Proxy(a) => return super::ssh::proxy(a).await,
        VmCmd::Shell(a) => return super::shell::shell(a).await,
        VmCmd::Ports(a) => super::ports::run(a).await?,
        VmCmd::Cp(a) => return super::cp::run(a).await,
        VmCmd::Forward(a) => return super::forward::run(a).await,
        VmCmd::Stats(a) => return super::stats::run(a).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// A lifecycle call with no body answering the VM; prints its name.
async fn lifecycle<E: Endpoint<Request = (), Response = VmRecord>>(reference: &str) -> Result<()> {
    let c = client::daemon().await?;
    let vm = c.call::<E>(&[reference], &()).await?;
    println!("{}", vm.name);
    Ok(())
}

fn show_vm(v: &VmRecord) {
    let mut rows = vec![
        ("name", v.name.clone()),
        ("id", v.id.clone()),
        ("state", v.state_label().to_string()),
        ("image", v.image_id.clone()),
        ("kernel", v.kernel_id.clone()),
        ("cpus", v.spec.vcpus.to_string()),
        (
            "memory",
            ByteSize(v.spec.memory_mib * ByteSize::MIB).to_string(),
        ),
        (
            "overlay disk",
            format!(
                "{} ({})",
                ByteSize(v.spec.overlay_disk_bytes),
                v.overlay_disk
            ),
        ),
        (
            "work disk",
            format!("{} ({})", ByteSize(v.spec.work_disk_bytes), v.work_disk),
        ),
        match &v.no_network {
            Some(why) => ("network", format!("none: {why}")),
            None => ("ip", v.guest_ip.clone()),
        },
        ("ports", super::ports::ports_column(v)),
        ("egress", v.egress.to_string()),
        (
            "idle suspend",
            match v.idle_suspend_secs {
                None => "default".to_string(),
                Some(0) => "off".to_string(),
                Some(s) => format!("after {s}s"),
            },
        ),
        ("vsock cid", v.vsock_cid.to_string()),
        ("dir", v.dir.clone()),
        ("created", v.created_at.clone()),
        ("updated", v.updated_at.clone()),
    ];
    if let Some(fault) = &v.agent_fault {
        rows.insert(3, ("agent", fault.clone()));
    }
    if let Some(c) = &v.confinement {
        rows.insert(3, ("confined", c.clone()));
    }
    output::fields(&rows);
}
