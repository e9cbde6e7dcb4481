//! `banger system install|status|restart|uninstall`: the root helper and
//! the owner's daemon as systemd services (banger-system renders and
//! manages the units), plus what no unit owns: the host network the helper
//! made (taps, bridge, nft table), which `uninstall` removes in this
//! process, as root, after the services are stopped.
//!
//! Without systemd as PID 1 there is nothing to install: `install` says
//! what to run instead (`banger-helper --owner UID` in the foreground),
//! while `status` and `uninstall` still report and remove the host network.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use banger_config::Config;
use banger_helper::{HelperClient, HostNetwork, InProcess, Policy};
use banger_system::{InstallSpec, Owner, SplitDns, SystemdHost};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::args::JsonFlag;
use crate::output;

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Install, enable and start the root helper and the owner's daemon (as root)
    Install(InstallArgs),
    /// Show both services, the helper, the bridge, the nft table and split DNS
    Status(JsonFlag),
    /// Restart the helper and the owner's daemon; VMs keep running (as root)
    Restart,
    /// Stop and remove the services, taps, bridge, nft table and split DNS (as root)
    Uninstall(UninstallArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The user whose daemon the helper serves (name or uid); default: the
    /// user who ran sudo
    #[arg(long)]
    owner: Option<String>,
    /// Where banger's binaries are (PREFIX/bin/bangerd, PREFIX/bin/banger-helper);
    /// default: the prefix of this banger
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// Also delete the taps of VMs that still run (their network goes)
    #[arg(long)]
    force: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: SystemCmd) -> Result<ExitCode> {
    match cmd {
        SystemCmd::Install(a) => install(a),
        SystemCmd::Status(f) => status(f.json).await,
        SystemCmd::Restart => {
            require_root("restart")?;
            let units = banger_system::restart(Path::new("/"), &SystemdHost)?;
            println!("restarted {}", units.join(" "));
            Ok(ExitCode::SUCCESS)
        }
        SystemCmd::Uninstall(a) => uninstall(a).await,
    }
}

fn require_root(verb: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        bail!(
            "system {verb} changes systemd units and host networking: run it as root (sudo banger system {verb})"
        )
    }
}

/// `--owner`, else the user who ran sudo.
fn owner(arg: Option<&str>) -> Result<(Owner, PathBuf)> {
    use nix::unistd::{Uid, User};
    let given = arg
        .map(str::to_owned)
        .or_else(|| std::env::var("SUDO_USER").ok().filter(|u| u != "root"))
        .ok_or_else(|| {
            anyhow!(
                "name the user whose daemon the helper serves: --owner USER (or run through sudo)"
            )
        })?;
    let user = match given.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(&given),
    }
    .with_context(|| format!("look up user {given}"))?
    .ok_or_else(|| anyhow!("no such user: {given}"))?;
    Ok((
        Owner {
            uid: user.uid.as_raw(),
            name: user.name,
        },
        user.dir,
    ))
}

/// The owner's own config (bridge, address, domain): the daemon it runs
/// reads that file, and the units must name the same bridge.
fn owner_config(home: &Path) -> Result<Config> {
    let path = home.join(".config/banger/config.toml");
    Ok(Config::load_from(&path)?)
}

fn install(a: InstallArgs) -> Result<ExitCode> {
    let (owner, home) = owner(a.owner.as_deref())?;
    let prefix = match a.prefix {
        Some(p) => p,
        None => std::env::current_exe()
            .context("find this banger's path")?
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("cannot tell banger's prefix; pass --prefix"))?,
    };
    let config = owner_config(&home)?;
    let mut spec = InstallSpec::new(owner, prefix);
    spec.bridge = config.network.bridge.clone();
    spec.bridge_addr = config.network.bridge_cidr.addr();
    spec.domain = config.network.domain.clone();
    if let Some(r) = which("resolvectl") {
        spec.resolvectl = r;
    }
    // validate() first: bad input is refused the same way with or without
    // systemd, and by anyone.
    spec.validate()?;
    require_root("install")?;
    let report = banger_system::install(&spec, &SystemdHost)?;
    if a.json {
        output::json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    for u in &report.units {
        println!("wrote {}", u.display());
    }
    println!("started {}", report.started.join(" "));
    match &report.split_dns {
        SplitDns::Resolved { unit } => println!(
            "split DNS: systemd-resolved sends *.{} to {} ({unit})",
            spec.domain, spec.bridge_addr
        ),
        SplitDns::Manual { hint } => println!("split DNS: {hint}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What the helper says of itself, as `status` and `doctor` show it.
#[derive(Debug, Serialize)]
pub struct HelperProbe {
    pub socket: PathBuf,
    pub reachable: bool,
    pub version: Option<String>,
    pub protocol: Option<u32>,
    pub owner: Option<u32>,
    pub error: Option<String>,
}

/// Ask the helper at `socket` for its version: never fails, says why.
pub async fn probe_helper(socket: &Path) -> HelperProbe {
    match HelperClient::connect(socket).await {
        Ok((_, info)) => HelperProbe {
            socket: socket.to_owned(),
            reachable: true,
            version: Some(info.version),
            protocol: Some(info.protocol),
            owner: Some(info.owner),
            error: None,
        },
        Err(e) => HelperProbe {
            socket: socket.to_owned(),
            reachable: false,
            version: None,
            protocol: None,
            owner: None,
            error: Some(chain(&e)),
        },
    }
}

/// The helper socket a daemon of this config uses.
pub fn helper_socket(config: &Config) -> PathBuf {
    config
        .network
        .helper_socket
        .clone()
        .or_else(|| {
            std::env::var_os("BANGER_HELPER_SOCKET")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(banger_helper::DEFAULT_SOCKET))
}

#[derive(Serialize)]
struct StatusOut {
    #[serde(flatten)]
    system: banger_system::SystemStatus,
    helper_socket: HelperProbe,
}

async fn status(json: bool) -> Result<ExitCode> {
    let system = banger_system::status(Path::new("/"), &SystemdHost)?;
    let config = Config::load()?;
    let probe = probe_helper(&helper_socket(&config)).await;
    if json {
        output::json(&StatusOut {
            system,
            helper_socket: probe,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{system}");
    match &probe {
        HelperProbe {
            reachable: true,
            version: Some(v),
            owner: Some(o),
            ..
        } => println!(
            "helper:     reachable at {} (banger-helper {v}, serves uid {o})",
            probe.socket.display()
        ),
        _ => println!(
            "helper:     unreachable: {}",
            probe.error.as_deref().unwrap_or("unknown")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `uninstall` removed.
#[derive(Debug, Default, Serialize)]
struct Removed {
    units: Vec<PathBuf>,
    services: Vec<String>,
    taps: Vec<String>,
    nft_table: bool,
    bridge: Option<String>,
}

async fn uninstall(a: UninstallArgs) -> Result<ExitCode> {
    require_root("uninstall")?;
    // The bridge: the one recorded at install, else this config's.
    let installed = banger_system::status(Path::new("/"), &SystemdHost)?;
    let bridge = match installed.bridge {
        Some(b) => b.name,
        None => Config::load()?.network.bridge,
    };
    let host = InProcess::new(Policy::new(Some(&bridge))?, 0)?;
    let taps = host.list_taps().await?;
    if !taps.is_empty() && !a.force {
        let names: Vec<String> = taps.iter().map(ToString::to_string).collect();
        bail!(
            "VMs still run on {bridge} (taps {}): stop them first (banger vm stop VM), or pass --force to cut their network",
            names.join(", ")
        );
    }
    let mut removed = Removed::default();
    // Services first, so no helper or daemon recreates what goes next.
    let report = banger_system::uninstall(Path::new("/"), &SystemdHost)?;
    removed.units = report.removed;
    removed.services = report.disabled;
    for tap in taps {
        host.delete_tap(&tap).await?;
        removed.taps.push(tap.to_string());
    }
    let status = host.status(&bridge).await?;
    if status.rules {
        host.remove_rules().await?;
        removed.nft_table = true;
    }
    // Deleting the link also drops what systemd-resolved held for it (the
    // `~vm` registration), and stops the split-DNS unit bound to it.
    if status.bridge {
        host.remove_bridge(&bridge).await?;
        removed.bridge = Some(bridge.clone());
    }
    let after = host.status(&bridge).await?;
    if after.bridge || after.rules || !host.list_taps().await?.is_empty() {
        bail!("host network still present after uninstall: {after:?}");
    }
    if a.json {
        output::json(&removed)?;
        return Ok(ExitCode::SUCCESS);
    }
    for u in &removed.units {
        println!("removed {}", u.display());
    }
    if !removed.services.is_empty() {
        println!("stopped {}", removed.services.join(" "));
    }
    for t in &removed.taps {
        println!("deleted tap {t}");
    }
    if removed.nft_table {
        println!("removed nft table inet banger");
    }
    if let Some(b) = &removed.bridge {
        println!("removed bridge {b}");
    }
    println!("nothing of banger's host setup remains");
    Ok(ExitCode::SUCCESS)
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}
