//! `banger-helper`: parse arguments, then either serve as the root helper
//! (`--owner UID`) or make one call to a running helper (`call`, for
//! `system status` and debugging). All logic lives in the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use banger_helper::{HelperClient, InProcess, Policy, server};
use clap::{Parser, Subcommand};

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
    #[arg(long, default_value = server::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The bridge this installation uses, if not named `banger*`.
    #[arg(long)]
    bridge: Option<String>,
    /// Let the owner publish host ports below 1024.
    #[arg(long)]
    allow_low_ports: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Send one operation (JSON, e.g. '{"op":"version"}') and print the reply.
    Call {
        #[arg(long, default_value = server::DEFAULT_SOCKET)]
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
        eprintln!("banger-helper: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(Command::Call { socket, op }) = cli.command {
        return call(socket, &op).await;
    }
    let owner = cli.owner.context("--owner UID is required to serve")?;
    let policy = Policy::new(cli.bridge.as_deref())?.allow_low_ports(cli.allow_low_ports);
    let exec = Arc::new(InProcess::new(policy, owner)?);
    let listener = server::bind_socket(&cli.socket)
        .with_context(|| format!("listen on {}", cli.socket.display()))?;
    tracing::info!(owner, socket = %cli.socket.display(), "banger-helper serving");
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
