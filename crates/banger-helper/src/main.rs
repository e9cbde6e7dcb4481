//! `banger-helper`: parse arguments, then either serve as the root helper
//! (`--owner UID`) or make one call to a running helper (`call`, for
//! `system status` and debugging). All logic lives in the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use banger_helper::policy::DEFAULT_CONFIG;
use banger_helper::{HelperClient, InProcess, Policy, PolicyFile, server};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;

#[derive(Parser)]
#[command(
    version,
    about = "banger's root helper: privileged host networking for one owner uid"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// The uid served besides root (the user running bangerd).
    #[arg(long)]
    owner: Option<u32>,
    /// The socket to listen on.
    #[arg(long, default_value = banger_helper::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The policy file (root's, written by `banger system install`);
    /// default /etc/banger/helper.toml when it exists, else built-in
    /// defaults. The flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The bridge (default banger0).
    #[arg(long)]
    bridge: Option<String>,
    /// The bridge's address and the guests' network (default 172.16.0.1/24).
    #[arg(long)]
    cidr: Option<Ipv4Net>,
    /// Host ports the owner may publish, FIRST-LAST (default 1024-65535).
    #[arg(long)]
    publish_ports: Option<String>,
    /// Let the owner publish host ports below 1024.
    #[arg(long)]
    allow_low_ports: bool,
    /// Keep the state (guests, their ports) in this file across restarts.
    #[arg(long)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Send one operation (JSON, e.g. '{"op":"version"}') and print the reply.
    Call {
        #[arg(long, default_value = banger_helper::DEFAULT_SOCKET)]
        socket: PathBuf,
        op: String,
    },
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()).await {
        // An error the helper sent back already says where it comes from.
        let msg = format!("{e:#}").replace('\n', "; ");
        match msg.strip_prefix("banger-helper: ") {
            Some(rest) => eprintln!("banger-helper: {rest}"),
            None => eprintln!("banger-helper: {msg}"),
        }
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(Command::Call { socket, op }) = cli.command {
        return call(socket, &op).await;
    }
    let owner = cli.owner.context("--owner UID is required to serve")?;
    let config = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    let mut file = match &config {
        Some(p) => PolicyFile::load(p)?,
        None => PolicyFile::default(),
    };
    if let Some(b) = cli.bridge {
        file.bridge = b;
    }
    if let Some(c) = cli.cidr {
        file.bridge_cidr = c;
    }
    if let Some(p) = cli.publish_ports {
        file.publish_ports = p;
    }
    file.allow_low_ports |= cli.allow_low_ports;
    let policy = Policy::new(&file)?;
    let exec = Arc::new(InProcess::start(policy, owner, cli.state).await?);
    let listener = server::bind_socket(&cli.socket)
        .with_context(|| format!("listen on {}", cli.socket.display()))?;
    tracing::info!(owner, socket = %cli.socket.display(), bridge = %file.bridge, cidr = %file.bridge_cidr, "banger-helper serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = server::serve(listener, exec, owner) => r.context("accept"),
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = std::fs::remove_file(&cli.socket);
    result
}

async fn call(socket: PathBuf, op: &str) -> Result<()> {
    // Sent as given: the helper, not this client, decides what is allowed.
    let op: serde_json::Value = serde_json::from_str(op).context("the operation is not JSON")?;
    let out = HelperClient::lazy(&socket).call_json(op).await?;
    println!("{}", serde_json::to_string(&out.reply)?);
    // Say what each handed-over descriptor is: a socket's address, or
    // the file it opens (a tap queue shows as /dev/net/tun).
    for fd in out.fds {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        match nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(raw) {
            Ok(addr) => println!("fd: {addr}"),
            Err(_) => println!(
                "fd: {}",
                std::fs::read_link(format!("/proc/self/fd/{raw}"))?.display()
            ),
        }
    }
    Ok(())
}
