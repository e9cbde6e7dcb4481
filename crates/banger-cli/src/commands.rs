//! The command tree and what each command sends and prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use banger_api::{
    ByteSize, CheckStatus, DaemonInfo, ImageImportRequest, ImageRecord, ImageSource,
    KernelImportRequest, KernelRecord, VmCreateRequest, VmRecord, VmSetRequest,
};
use banger_core::{Config, Layout};
use clap::{Args, Parser, Subcommand};
use hyper::http::Method;

use crate::client::{self, Client};
use crate::output::{self, Progress};

#[derive(Parser, Debug)]
#[command(name = "banger", version, about = "MicroVMs that feel like containers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage VMs
    #[command(subcommand)]
    Vm(VmCmd),
    /// Manage images (read-only root filesystems)
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage kernels
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// Show the effective configuration
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Control the daemon
    #[command(subcommand)]
    Daemon(DaemonCmd),
    /// Check what this host can do, with the fix for each problem
    Doctor(JsonFlag),
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct Ref {
    /// Name or unambiguous id prefix
    reference: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum VmCmd {
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
        #[arg(required = true)]
        references: Vec<String>,
        /// Kill running VMs first
        #[arg(short, long)]
        force: bool,
    },
    /// Boot a VM and wait until its agent answers
    Start(Ref),
    /// Shut a VM down cleanly, killing it after --timeout seconds
    Stop {
        reference: String,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Stop then start
    Restart {
        reference: String,
        #[arg(long, default_value_t = 20)]
        timeout: u64,
    },
    /// Kill a VM's VMM at once
    Kill { reference: String },
    /// Print a VM's serial console
    Logs { reference: String },
    /// Run a command in a running VM
    Exec(ExecArgs),
    /// Create a VM, start it, run a command in it and return its exit code
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct ExecOpts {
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
struct ExecArgs {
    reference: String,
    #[command(flatten)]
    opts: ExecOpts,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Image name or id prefix
    image: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    kernel: Option<String>,
    #[arg(long = "cpus")]
    cpus: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    work_disk_size: Option<String>,
    /// Remove the VM when the command ends
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    opts: ExecOpts,
    /// The command and its arguments (default: a shell)
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct VmCreateArgs {
    /// Image name or id prefix (default: config's default_image, or the only image)
    image: Option<String>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
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
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct VmSetArgs {
    reference: String,
    #[arg(long = "cpus")]
    cpus: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    /// Grow the work disk (stopped VMs only; never shrinks)
    #[arg(long)]
    work_disk_size: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Pull an image from an OCI or Docker v2 registry
    Pull {
        /// e.g. debian:bookworm, ghcr.io/org/app:1.2, 127.0.0.1:5000/x:y
        reference: String,
        /// Name in banger (default: repository and tag, e.g. debian:bookworm)
        #[arg(long)]
        name: Option<String>,
        /// os/arch[/variant] (default linux/amd64)
        #[arg(long)]
        platform: Option<String>,
        /// Allow plain HTTP to a registry that is not on loopback
        #[arg(long)]
        insecure: bool,
        /// Registry user; the password is read from stdin (--password-stdin)
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        #[arg(long, requires = "username")]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Import a root filesystem directory or tarball (.tar, .tar.gz, .tar.zst)
    Import {
        path: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "list")]
    Ls(JsonFlag),
    Show(Ref),
    /// Remove images; cache blobs no other image uses are freed
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Free every cache blob no image uses (and abandoned downloads)
    Prune(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum KernelCmd {
    /// Import a kernel image (bzImage or vmlinux), or a linux-image-*.deb with --deb
    Import {
        path: PathBuf,
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long)]
        name: Option<String>,
        /// PATH is a Debian linux-image package: import its kernel and modules
        #[arg(long)]
        deb: bool,
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "list")]
    Ls(JsonFlag),
    Show(Ref),
    #[command(alias = "delete")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Make a kernel the default for new VMs
    Default {
        reference: String,
    },
    /// Download a kernel from the catalog, check its SHA-256, import it
    Pull {
        /// Catalog entry (`banger kernel catalog`)
        entry: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the kernels `kernel pull` can fetch
    Catalog(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the effective configuration (file + defaults + environment)
    Show(JsonFlag),
}

#[derive(Subcommand, Debug)]
enum DaemonCmd {
    /// Is the daemon running? (never starts it)
    Status(JsonFlag),
    /// Stop the daemon; running VMs keep running
    Stop,
}

/// Memory as typed: `2G`, `512M`, or a bare number of MiB.
fn parse_memory(s: &str) -> Result<u64> {
    if s.trim().chars().all(|c| c.is_ascii_digit()) {
        return s
            .trim()
            .parse()
            .map_err(|_| anyhow!("invalid memory {s:?}"));
    }
    let bytes: ByteSize = s.parse()?;
    if !bytes.0.is_multiple_of(ByteSize::MIB) {
        return Err(anyhow!("memory {s:?} must be a whole number of MiB"));
    }
    Ok(bytes.0 / ByteSize::MIB)
}

fn parse_size(s: &str) -> Result<ByteSize> {
    Ok(s.parse::<ByteSize>()?)
}

/// Paths sent to the daemon are absolute: it does not share our cwd.
fn absolute(p: &Path) -> Result<String> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(banger_core::paths::absolutize(p, &cwd)
        .display()
        .to_string())
}

fn layout() -> Result<Layout> {
    let config = Config::load()?;
    Ok(Layout::new(config.data_dir))
}

async fn daemon() -> Result<Client> {
    let layout = layout()?;
    client::connect(layout.socket(), &layout.daemon_log()).await
}

/// Run a long operation with a progress display, then print the resulting
/// object as JSON or just its name.
async fn create_and_print<T, B>(
    path: &str,
    body: &B,
    json: bool,
    name: impl Fn(&T) -> &str,
) -> Result<()>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
    B: serde::Serialize,
{
    let c = daemon().await?;
    let p = Progress::new();
    let obj: T = c.stream(Method::POST, path, body, |e| p.event(e)).await?;
    drop(p);
    if json {
        output::json(&obj)?;
    } else {
        println!("{}", name(&obj));
    }
    Ok(())
}

/// URL path segment for a user-typed reference.
pub(crate) fn seg(r: &str) -> String {
    let mut out = String::new();
    for b in r.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Vm(cmd) => vm(cmd).await,
        Command::Image(cmd) => image(cmd).await,
        Command::Kernel(cmd) => kernel(cmd).await,
        Command::Config(ConfigCmd::Show(f)) => {
            let c = daemon().await?;
            let v: serde_json::Value = c.call(Method::GET, "/v1/config", None::<&()>).await?;
            if f.json {
                output::json(&v["config"])?;
            } else {
                println!("# {}", v["path"].as_str().unwrap_or(""));
                print!("{}", v["toml"].as_str().unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(cmd) => daemon_cmd(cmd).await,
        Command::Doctor(f) => doctor(f.json),
    }
}

async fn vm(cmd: VmCmd) -> Result<ExitCode> {
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
            };
            create_and_print("/v1/vms", &req, a.json, |vm: &VmRecord| &vm.name).await?;
        }
        VmCmd::Ls(f) => {
            let c = daemon().await?;
            let vms: Vec<VmRecord> = c.call(Method::GET, "/v1/vms", None::<&()>).await?;
            if f.json {
                output::json(&vms)?;
            } else {
                let images: Vec<ImageRecord> =
                    c.call(Method::GET, "/v1/images", None::<&()>).await?;
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
                            v.desired_state.as_str().to_string(),
                            image_name(&v.image_id),
                            v.guest_ip.clone(),
                            v.spec.vcpus.to_string(),
                            ByteSize(v.spec.memory_mib * ByteSize::MIB).to_string(),
                            ByteSize(v.spec.work_disk_bytes).to_string(),
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
                    ],
                    &rows,
                );
            }
        }
        VmCmd::Show(r) => {
            let Some(v) = fetch_for_show::<VmRecord>("vms", &r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            show_vm(&v);
        }
        VmCmd::Set(a) => {
            let req = VmSetRequest {
                vcpus: a.cpus,
                memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
                work_disk_size: a.work_disk_size.as_deref().map(parse_size).transpose()?,
            };
            let c = daemon().await?;
            let v: VmRecord = c
                .call(
                    Method::PATCH,
                    &format!("/v1/vms/{}", seg(&a.reference)),
                    Some(&req),
                )
                .await?;
            if a.json {
                output::json(&v)?;
            } else {
                show_vm(&v);
            }
        }
        VmCmd::Rm { references, force } => {
            let c = daemon().await?;
            let query = if force { "?force=true" } else { "" };
            return remove_each(&c, "vms", &references, query).await;
        }
        VmCmd::Start(r) => {
            let c = daemon().await?;
            let report = start(&c, &r.reference).await?;
            if r.json {
                output::json(&report)?;
            } else {
                println!("{}", report["vm"]["name"].as_str().unwrap_or(&r.reference));
            }
        }
        VmCmd::Stop { reference, timeout } => {
            let c = daemon().await?;
            let body = serde_json::json!({"timeout_secs": timeout});
            let vm: VmRecord = c
                .call(
                    Method::POST,
                    &format!("/v1/vms/{}/stop", seg(&reference)),
                    Some(&body),
                )
                .await?;
            println!("{}", vm.name);
        }
        VmCmd::Restart { reference, timeout } => {
            let c = daemon().await?;
            let body = serde_json::json!({"timeout_secs": timeout});
            let p = Progress::new();
            let report: serde_json::Value = c
                .stream(
                    Method::POST,
                    &format!("/v1/vms/{}/restart", seg(&reference)),
                    &body,
                    |e| p.event(e),
                )
                .await?;
            drop(p);
            println!("{}", report["vm"]["name"].as_str().unwrap_or(&reference));
        }
        VmCmd::Kill { reference } => {
            let c = daemon().await?;
            let vm: VmRecord = c
                .call(
                    Method::POST,
                    &format!("/v1/vms/{}/kill", seg(&reference)),
                    None::<&()>,
                )
                .await?;
            println!("{}", vm.name);
        }
        VmCmd::Logs { reference } => {
            let c = daemon().await?;
            let text = c.text(&format!("/v1/vms/{}/logs", seg(&reference))).await?;
            std::io::Write::write_all(&mut std::io::stdout(), &text)?;
        }
        VmCmd::Exec(a) => {
            let layout = layout()?;
            let c = client::connect(layout.socket(), &layout.daemon_log()).await?;
            drop(c);
            let code = exec_in(&layout.socket(), &a.reference, &a.opts, a.command).await?;
            return Ok(exit_code(code));
        }
        VmCmd::Run(a) => return run_cmd(a).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Boot a VM, showing its stages; returns the start report.
async fn start(c: &Client, reference: &str) -> Result<serde_json::Value> {
    let p = Progress::new();
    let report: serde_json::Value = c
        .stream(
            Method::POST,
            &format!("/v1/vms/{}/start", seg(reference)),
            &serde_json::json!({}),
            |e| p.event(e),
        )
        .await?;
    Ok(report)
}

async fn exec_in(
    socket: &Path,
    reference: &str,
    o: &ExecOpts,
    command: Vec<String>,
) -> Result<i32> {
    use std::io::IsTerminal;
    let mut env = Vec::new();
    for kv in &o.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid --env {kv:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            return Err(anyhow!("invalid --env {kv:?}: empty name"));
        }
        env.push((k.to_string(), v.to_string()));
    }
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
    crate::exec::run(socket, reference, req, forward_stdin).await
}

async fn run_cmd(a: RunArgs) -> Result<ExitCode> {
    if let Some(n) = &a.name {
        banger_api::validate::vm_name(n).map_err(|e| anyhow!(e))?;
    }
    let req = VmCreateRequest {
        image: a.image.clone(),
        name: a.name.clone(),
        kernel: a.kernel.clone(),
        vcpus: a.cpus,
        memory_mib: a.memory.as_deref().map(parse_memory).transpose()?,
        overlay_disk_size: None,
        work_disk_size: a.work_disk_size.as_deref().map(parse_size).transpose()?,
    };
    let layout = layout()?;
    let c = client::connect(layout.socket(), &layout.daemon_log()).await?;
    let p = Progress::new();
    let vm: VmRecord = c
        .stream(Method::POST, "/v1/vms", &req, |e| p.event(e))
        .await?;
    drop(p);
    // The image's config decides what runs, as in Docker: the entrypoint,
    // then the given arguments or else the image's Cmd; its Env, WorkingDir
    // and User apply unless -e / -w / -u say otherwise.
    let image: ImageRecord = c
        .call(
            Method::GET,
            &format!("/v1/images/{}", seg(&vm.image_id)),
            None::<&()>,
        )
        .await?;
    let cfg = &image.config;
    let mut command = cfg.entrypoint.clone();
    command.extend(if a.command.is_empty() {
        cfg.cmd.clone()
    } else {
        a.command
    });
    if command.is_empty() {
        command = vec!["/bin/sh".to_string()];
    }
    let mut opts = a.opts;
    let mut env: Vec<String> = cfg
        .env
        .iter()
        .filter(|e| e.contains('='))
        .cloned()
        .collect();
    env.extend(opts.env);
    opts.env = env;
    if opts.workdir.is_none() {
        opts.workdir = cfg.working_dir.clone().filter(|w| !w.is_empty());
    }
    if opts.user.is_none() {
        opts.user = cfg.user.clone().filter(|u| !u.is_empty());
    }
    let outcome = async {
        start(&c, &vm.id).await?;
        exec_in(&layout.socket(), &vm.id, &opts, command).await
    }
    .await;
    if a.rm {
        let cleanup: Result<serde_json::Value> = c
            .call(
                Method::DELETE,
                &format!("/v1/vms/{}?force=true", seg(&vm.id)),
                None::<&()>,
            )
            .await;
        if let Err(e) = cleanup {
            eprintln!("banger: cannot remove vm {}: {e}", vm.name);
        }
    }
    Ok(exit_code(outcome?))
}

/// Remove each reference, reporting every failure; non-zero if any failed.
/// `query` is appended to each DELETE (e.g. `?force=true`).
/// `GET /v1/{kind}/{ref}` for `show`: with `--json` the record is printed
/// here and `None` returned; otherwise the caller prints it for humans.
async fn fetch_for_show<T: serde::de::DeserializeOwned + serde::Serialize>(
    kind: &str,
    r: &Ref,
) -> Result<Option<T>> {
    let c = daemon().await?;
    let record: T = c
        .call(
            Method::GET,
            &format!("/v1/{kind}/{}", seg(&r.reference)),
            None::<&()>,
        )
        .await?;
    if r.json {
        output::json(&record)?;
        return Ok(None);
    }
    Ok(Some(record))
}

async fn remove_each(c: &Client, kind: &str, refs: &[String], query: &str) -> Result<ExitCode> {
    let mut failed = false;
    for r in refs {
        let res: Result<serde_json::Value> = c
            .call(
                Method::DELETE,
                &format!("/v1/{kind}/{}{query}", seg(r)),
                None::<&()>,
            )
            .await;
        match res {
            Ok(v) => println!("{}", v["name"].as_str().unwrap_or(r)),
            Err(e) => {
                eprintln!("banger: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn show_vm(v: &VmRecord) {
    output::fields(&[
        ("name", v.name.clone()),
        ("id", v.id.clone()),
        ("state", v.desired_state.as_str().to_string()),
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
        ("ip", v.guest_ip.clone()),
        ("vsock cid", v.vsock_cid.to_string()),
        ("dir", v.dir.clone()),
        ("created", v.created_at.clone()),
        ("updated", v.updated_at.clone()),
    ]);
}

fn source_text(s: &ImageSource) -> String {
    match s {
        ImageSource::Directory { path } => format!("dir {path}"),
        ImageSource::Tarball { path } => format!("tar {path}"),
        ImageSource::Registry { reference, .. } => reference.clone(),
    }
}

/// The manifest digest of a pulled image, `-` for a local one.
fn digest_text(s: &ImageSource, short: bool) -> String {
    match s {
        ImageSource::Registry { digest, .. } if short => {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            hex.chars().take(12).collect()
        }
        ImageSource::Registry { digest, .. } => digest.clone(),
        _ => "-".to_string(),
    }
}

/// An argv list as a shell would read it back, `-` when empty.
fn argv_text(argv: &[String]) -> String {
    if argv.is_empty() {
        return "-".to_string();
    }
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| format!("{argv:?}"))
}

async fn image(cmd: ImageCmd) -> Result<ExitCode> {
    match cmd {
        ImageCmd::Pull {
            reference,
            name,
            platform,
            insecure,
            username,
            password_stdin,
            json,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            let req = banger_api::ImagePullRequest {
                reference,
                name,
                platform,
                insecure,
                username,
                password,
            };
            create_and_print("/v1/images/pull", &req, json, |i: &ImageRecord| &i.name).await?;
        }
        ImageCmd::Import { path, name, json } => {
            banger_api::validate::artifact_name(&name, "image name").map_err(|e| anyhow!(e))?;
            let req = ImageImportRequest {
                path: absolute(&path)?,
                name,
            };
            create_and_print("/v1/images", &req, json, |i: &ImageRecord| &i.name).await?;
        }
        ImageCmd::Ls(f) => {
            let c = daemon().await?;
            let imgs: Vec<ImageRecord> = c.call(Method::GET, "/v1/images", None::<&()>).await?;
            if f.json {
                output::json(&imgs)?;
            } else {
                let rows: Vec<Vec<String>> = imgs
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.id[..12].to_string(),
                            digest_text(&i.source, true),
                            banger_api::size::human(i.size_bytes),
                            if i.has_init { "yes" } else { "no" }.to_string(),
                            source_text(&i.source),
                            i.created_at.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["NAME", "ID", "DIGEST", "SIZE", "INIT", "SOURCE", "CREATED"],
                    &rows,
                );
            }
        }
        ImageCmd::Show(r) => {
            let Some(i) = fetch_for_show::<ImageRecord>("images", &r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            output::fields(&[
                ("name", i.name.clone()),
                ("id", i.id.clone()),
                ("source", source_text(&i.source)),
                ("digest", digest_text(&i.source, false)),
                ("size", banger_api::size::human(i.size_bytes)),
                (
                    "init",
                    if i.has_init {
                        "yes"
                    } else {
                        "no (the banger agent stays PID 1)"
                    }
                    .to_string(),
                ),
                ("entrypoint", argv_text(&i.config.entrypoint)),
                ("cmd", argv_text(&i.config.cmd)),
                (
                    "user",
                    i.config
                        .user
                        .clone()
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| "root".into()),
                ),
                (
                    "workdir",
                    i.config
                        .working_dir
                        .clone()
                        .filter(|w| !w.is_empty())
                        .unwrap_or_else(|| "/root".into()),
                ),
                ("env", argv_text(&i.config.env)),
                ("base", i.base_path.clone()),
                ("work seed", i.work_seed_path.clone()),
                ("created", i.created_at.clone()),
            ]);
        }
        ImageCmd::Rm { references } => {
            let c = daemon().await?;
            return remove_each(&c, "images", &references, "").await;
        }
        ImageCmd::Prune(f) => {
            let c = daemon().await?;
            let r: banger_api::PruneReport = c
                .call(Method::POST, "/v1/images/prune", None::<&()>)
                .await?;
            if f.json {
                output::json(&r)?;
            } else {
                println!(
                    "removed {} blob{}, freed {}",
                    r.blobs_removed,
                    if r.blobs_removed == 1 { "" } else { "s" },
                    banger_api::size::human(r.bytes_freed)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn kernel(cmd: KernelCmd) -> Result<ExitCode> {
    match cmd {
        KernelCmd::Import {
            path,
            initrd,
            name,
            deb,
            json,
        } => {
            if let Some(n) = &name {
                banger_api::validate::artifact_name(n, "kernel name").map_err(|e| anyhow!(e))?;
            }
            let req = KernelImportRequest {
                path: absolute(&path)?,
                initrd: initrd.as_deref().map(absolute).transpose()?,
                name,
                deb,
            };
            create_and_print("/v1/kernels", &req, json, |k: &KernelRecord| &k.name).await?;
        }
        KernelCmd::Ls(f) => {
            let c = daemon().await?;
            let ks: Vec<KernelRecord> = c.call(Method::GET, "/v1/kernels", None::<&()>).await?;
            if f.json {
                output::json(&ks)?;
            } else {
                let rows: Vec<Vec<String>> = ks
                    .iter()
                    .map(|k| {
                        vec![
                            k.name.clone(),
                            k.id[..12].to_string(),
                            k.release.clone().unwrap_or_else(|| "-".into()),
                            if k.modules_path.is_some() {
                                "yes"
                            } else {
                                "no"
                            }
                            .to_string(),
                            if k.is_default { "*" } else { "" }.to_string(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ID", "RELEASE", "MODULES", "DEFAULT"], &rows);
            }
        }
        KernelCmd::Show(r) => {
            let Some(k) = fetch_for_show::<KernelRecord>("kernels", &r).await? else {
                return Ok(ExitCode::SUCCESS);
            };
            output::fields(&[
                ("name", k.name.clone()),
                ("id", k.id.clone()),
                (
                    "release",
                    k.release.clone().unwrap_or_else(|| "unknown".into()),
                ),
                ("kernel", k.kernel_path.clone()),
                (
                    "initrd",
                    k.initrd_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "modules",
                    k.modules_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "vmlinux",
                    k.vmlinux_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "config",
                    k.config_path.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "modules disk",
                    k.modules_disk.clone().unwrap_or_else(|| "-".into()),
                ),
                ("default", k.is_default.to_string()),
                ("created", k.created_at.clone()),
            ]);
            for s in &k.vmm_support {
                println!("{}: {}", s.vmm, s.summary());
            }
            if k.vmm_support.is_empty() {
                println!("vmms: unknown (imported before banger judged kernels; import it again)");
            }
        }
        KernelCmd::Pull { entry, name, json } => {
            let req = banger_api::KernelPullRequest { entry, name };
            create_and_print("/v1/kernels/pull", &req, json, |k: &KernelRecord| &k.name).await?;
        }
        KernelCmd::Catalog(f) => {
            let c = daemon().await?;
            let entries: Vec<banger_api::KernelCatalogEntry> = c
                .call(Method::GET, "/v1/kernels/catalog", None::<&()>)
                .await?;
            if f.json {
                output::json(&entries)?;
            } else {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.name.clone(),
                            e.format.as_str().to_string(),
                            e.sha256[..12.min(e.sha256.len())].to_string(),
                            e.origin.clone(),
                            e.url.clone(),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "FORMAT", "SHA256", "ORIGIN", "URL"], &rows);
            }
        }
        KernelCmd::Rm { references } => {
            let c = daemon().await?;
            return remove_each(&c, "kernels", &references, "").await;
        }
        KernelCmd::Default { reference } => {
            let c = daemon().await?;
            let k: KernelRecord = c
                .call(
                    Method::POST,
                    &format!("/v1/kernels/{}/default", seg(&reference)),
                    None::<&()>,
                )
                .await?;
            println!("{}", k.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn daemon_cmd(cmd: DaemonCmd) -> Result<ExitCode> {
    let layout = layout()?;
    let c = Client::new(layout.socket());
    match cmd {
        DaemonCmd::Status(f) => match c.ping().await {
            Some(info) => {
                if f.json {
                    output::json(&info)?;
                } else {
                    print_info(&info);
                }
                Ok(ExitCode::SUCCESS)
            }
            None => {
                if f.json {
                    output::json(
                        &serde_json::json!({"running": false, "socket": layout.socket()}),
                    )?;
                } else {
                    println!(
                        "bangerd is not running (socket {})",
                        layout.socket().display()
                    );
                }
                Ok(ExitCode::from(3))
            }
        },
        DaemonCmd::Stop => {
            let Some(info) = c.ping().await else {
                println!("bangerd is not running");
                return Ok(ExitCode::SUCCESS);
            };
            let _: serde_json::Value = c.call(Method::POST, "/v1/daemon/stop", None::<&()>).await?;
            // Wait for the process, not just the socket: the lock is held
            // until in-flight operations finish.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while Path::new(&format!("/proc/{}", info.pid)).exists() {
                if std::time::Instant::now() > deadline {
                    return Err(anyhow!(
                        "bangerd (pid {}) did not exit within 60s",
                        info.pid
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            println!("bangerd stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_info(info: &DaemonInfo) {
    output::fields(&[
        ("status", "running".into()),
        ("pid", info.pid.to_string()),
        ("version", info.version.clone()),
        ("api", format!("v{}", info.api_version)),
        ("socket", info.socket.clone()),
        ("data dir", info.data_dir.clone()),
        ("started", info.started_at.clone()),
    ]);
}

fn doctor(json: bool) -> Result<ExitCode> {
    let config = Config::load()?;
    let checks = banger_core::doctor::run(&config, &banger_core::doctor::Host::real());
    if json {
        output::json(&checks)?;
    } else {
        for c in &checks {
            let mark = match c.status {
                CheckStatus::Pass => "ok  ",
                CheckStatus::Warn => "warn",
                CheckStatus::Fail => "FAIL",
            };
            if c.fix.is_empty() {
                println!("{mark}  {:<12} {}", c.name, c.detail);
            } else {
                println!("{mark}  {:<12} {} -> {}", c.name, c.detail, c.fix);
            }
        }
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
