//! `banger vm exec` and `banger vm run`: a command in a VM, its output
//! and exit code passed through. `run` creates and starts the VM first and
//! asks the daemon to apply the image's config (Docker's `run` rules live in
//! banger-core's `run_rules.rs`, so every API client gets them).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use banger_api::StartReport;
use banger_api::VmCreateRequest;
use banger_api::VmRmQuery;
use banger_api::endpoints::{VmsCreate, VmsRm, VmsStart};
use clap::Args;

use crate::client::{self, Client};
use crate::input::{parse_env, parse_memory, parse_size};
use crate::output::Progress;

#[derive(Args, Debug)]
pub struct ExecOpts {
    /// Environment variable for the command (repeatable)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory in the guest (default: the user's home; for vm run: the image's WorkingDir)
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User to run as, each part a name or a number (default: root; for vm run: the image's User)
    #[arg(short = 'u', long = "user", value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin open even when it is a terminal (piped stdin is always passed)
    #[arg(short = 'i', long)]
    interactive: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    reference: String,
    #[command(flatten)]
    opts: ExecOpts,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Image name or id prefix
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    image: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    kernel: Option<String>,
    #[arg(long = "cpus")]
    cpus: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    work_disk_size: Option<String>,
    #[command(flatten)]
    net: super::ports::NetArgs,
    /// Suspend the VM after this long without use (30s, 10m, 1h; off)
    #[arg(long, value_name = "DURATION", value_parser = banger_api::validate::idle_suspend)]
    idle_suspend: Option<u64>,
    /// Remove the VM when the command ends
    #[arg(long)]
    rm: bool,
    /// Boot even when a boot template could restore the VM (see `banger warm`)
    #[arg(long)]
    cold: bool,
    /// Sync this git checkout into the guest first and run the command in it
    #[arg(long, value_name = "DIR")]
    workspace: Option<std::path::PathBuf>,
    /// Where the workspace goes in the guest (default: <workspace.guest_dir>/<repo-name>)
    #[arg(long = "workspace-path", requires = "workspace")]
    workspace_path: Option<String>,
    #[command(flatten)]
    opts: ExecOpts,
    /// The command and its arguments (default: a shell)
    #[arg(last = true)]
    command: Vec<String>,
}

pub async fn exec(a: ExecArgs) -> Result<ExitCode> {
    let env = parse_env(&a.opts.env)?;
    let c = client::unchecked()?;
    // The daemon is checked (and started if needed) while the session opens.
    let check = async { c.ensure().await.map(drop) };
    let code = exec_in(&c, &a.reference, &a.opts, env, a.command, false, check).await?;
    Ok(exit_code(code))
}

pub async fn run(a: RunArgs) -> Result<ExitCode> {
    if let Some(n) = &a.name {
        banger_api::validate::vm_name(n).map_err(|e| anyhow!(e))?;
    }
    // Everything typed is checked before the VM is made, so a typo in an
    // option leaves nothing behind.
    let env = parse_env(&a.opts.env)?;
    let workspace = match &a.workspace {
        Some(dir) => {
            let repo = crate::workspace::HostRepo::find(dir)?;
            let guest_dir = banger_config::Config::load()?.workspace.guest_dir;
            let dest = repo.guest_path(&guest_dir, a.workspace_path.as_deref())?;
            Some((repo, dest))
        }
        None => None,
    };
    let mut opts = a.opts;
    let req = VmCreateRequest {
        image: a.image.clone(),
        name: a.name.clone(),
        kernel: a.kernel.clone(),
        vcpus: a.cpus,
        memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
        overlay_disk_size: None,
        work_disk_size: a.work_disk_size.as_deref().map(parse_size).transpose()?,
        ports: a.net.ports.clone(),
        network: a.net.network,
        egress: a.net.egress.clone(),
        idle_suspend_secs: a.idle_suspend,
    };
    let c = client::daemon().await?;
    let p = Progress::new();
    let vm = c.stream::<VmsCreate>(&[], &req, |e| p.event(e)).await?;
    drop(p);
    let outcome = async {
        start(&c, &vm.id, a.cold).await?;
        if let Some((repo, dest)) = workspace {
            let id = vm.id.clone();
            opts.workdir.get_or_insert_with(|| dest.clone());
            let report =
                tokio::task::spawn_blocking(move || crate::workspace::sync(&repo, &id, &dest))
                    .await??;
            eprintln!("{report}");
        }
        exec_in(&c, &vm.id, &opts, env, a.command, true, async { Ok(()) }).await
    }
    .await;
    if a.rm {
        let cleanup = c
            .call_with::<VmsRm>(&[&vm.id], &VmRmQuery { force: true }, &())
            .await;
        if let Err(e) = cleanup {
            eprintln!("banger: cannot remove vm {}: {e}", vm.name);
        }
    }
    Ok(exit_code(outcome?))
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Run `command` in VM `reference`; with `image_config` the daemon applies
/// the image's entrypoint, cmd, env, workdir and user first.
async fn exec_in(
    client: &Client,
    reference: &str,
    o: &ExecOpts,
    env: Vec<(String, String)>,
    command: Vec<String>,
    image_config: bool,
    check: impl std::future::Future<Output = Result<()>>,
) -> Result<i32> {
    let tty = if o.tty {
        Some(crate::exec::terminal_size().unwrap_or(banger_proto::TtySize { rows: 24, cols: 80 }))
    } else {
        None
    };
    // Piped stdin always flows; a terminal only with -i or -t, so a plain
    // `vm exec` does not swallow what the user types next.
    let forward_stdin = o.interactive || o.tty || !std::io::stdin().is_terminal();
    let req = banger_proto::ExecRequest {
        argv: command,
        env,
        cwd: o.workdir.clone(),
        user: o.user.clone(),
        tty,
        stdin: forward_stdin,
    };
    crate::exec::run(client, reference, req, forward_stdin, image_config, check).await
}

/// Boot a VM (`cold`: never from a boot template), showing its stages;
/// returns the start report.
pub(super) async fn start(c: &Client, reference: &str, cold: bool) -> Result<StartReport> {
    let p = Progress::new();
    c.stream::<VmsStart>(&[reference], &banger_api::VmStartRequest { cold }, |e| {
        p.event(e)
    })
    .await
}
